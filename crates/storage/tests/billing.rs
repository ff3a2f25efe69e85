//! Holds and settlements on every configured backend (SQLite always, MariaDB/MySQL when
//! `TOLLGATE_TEST_MYSQL_URL` is set): the conditional hold, settle-once, release, expiry, key
//! caps, and a real concurrent race for one balance.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use std::sync::Arc;
use tollgate_domain::Quota;
use tollgate_domain::billing::{
    BatchAttempt, BatchReceipt, Hold, HoldRefusal, Lease, LeaseGrowth, SettleOutcome, Settlement,
};
use tollgate_domain::cluster::InstanceId;
use tollgate_domain::ids::{ExternalUserId, PlatformId, TokenId, UserId};
use tollgate_domain::logs::{LogKind, LogPage, LogQueryInput};
use tollgate_domain::pricing::Usage;
use tollgate_domain::repository::{
    BillingRepository, LeaseRepository, LogRepository, TokenRepository, UserRepository,
};
use tollgate_domain::time::UnixTime;
use tollgate_domain::user::User;
use tollgate_storage::{SeaStore, testing};

const NOW: UnixTime = UnixTime::from_secs(1_764_000_000);

async fn stores() -> Vec<Arc<SeaStore>> {
    testing::shared_stores().await
}

/// A user with `usd` credited and one key (optionally capped); returns (user id, token id).
async fn funded(store: &SeaStore, id: &str, usd: &str, cap: Option<Quota>) -> (UserId, TokenId) {
    testing::funded(store, id, usd, cap, 7, NOW).await
}

async fn reload(store: &SeaStore, id: &str) -> User {
    store
        .find_user(
            &PlatformId::from_secret("platform-a"),
            &ExternalUserId::parse(id).expect("id"),
        )
        .await
        .expect("find")
        .expect("user")
}

/// A user's balance, holds, spent quota and settled calls.
fn book(user: &User) -> (i64, i64, i64, i64) {
    (
        user.quota.get(),
        user.held_quota.get(),
        user.used_quota.get(),
        user.total_requests,
    )
}

/// Page `page` (from 1) of `size` of the consume rows logged for `user`, newest first.
async fn consume_page(store: &SeaStore, user: UserId, page: u64, size: u64) -> LogPage {
    store
        .log_page(
            user,
            &LogQueryInput {
                kind: Some("consume".into()),
                page: Some(page.to_string()),
                page_size: Some(size.to_string()),
                ..Default::default()
            }
            .into_query()
            .expect("query"),
        )
        .await
        .expect("logs")
}

/// Consume rows logged for `user`.
async fn consumed(store: &SeaStore, user: UserId) -> u64 {
    consume_page(store, user, 1, 10).await.total
}

/// A new lease of `user`'s, not yet in the database.
fn lease_of(user: UserId) -> Lease {
    Lease::new(InstanceId::parse("test-instance").expect("id"), user, 1)
}

/// A lease of `user`'s holding `amount`, its row created.
async fn leased(store: &SeaStore, user: UserId, amount: i64) -> Lease {
    let lease = lease_of(user);
    let grown = store
        .grow_lease(&lease, Quota::new(amount), Quota::ZERO, 1, true, NOW)
        .await
        .expect("grow");
    assert_eq!(grown, LeaseGrowth::Grown);
    lease
}

fn hold(request: &str, user: UserId, token: TokenId, amount: i64) -> Hold {
    Hold {
        request_id: request.into(),
        user_id: user,
        token_id: token,
        amount: Quota::new(amount),
        created_at: NOW,
        expires_at: UnixTime::from_secs(NOW.secs() + 600),
        instance: InstanceId::parse("test-instance").expect("id"),
        capped_key: false,
    }
}

fn settlement(request: &str, user: UserId, token: TokenId, quota: i64) -> Settlement {
    Settlement {
        request_id: request.into(),
        user_id: user,
        token_id: token,
        token_name: "key".into(),
        model: "qwen-turbo".into(),
        usage: Usage::new(14, 18),
        quota: Quota::new(quota),
        is_stream: false,
        latency_ms: 5,
        channel_id: None,
        lease: None,
        at: NOW,
    }
}

#[tokio::test]
async fn a_hold_is_taken_only_when_it_fits_and_settles_once() {
    for store in stores().await {
        // $0.01 = 5,000 quota.
        let (u, t) = funded(&store, "h1", "0.01", None).await;
        assert_eq!(
            store
                .hold(&hold("r-big", u, t, 5_001), NOW)
                .await
                .expect("hold"),
            Err(HoldRefusal::InsufficientUserQuota)
        );
        assert_eq!(
            store
                .hold(&hold("r1", u, t, 3_000), NOW)
                .await
                .expect("hold"),
            Ok(())
        );
        // Holds in flight count: 3,000 + 2,001 > 5,000.
        assert_eq!(
            store
                .hold(&hold("r2", u, t, 2_001), NOW)
                .await
                .expect("hold"),
            Err(HoldRefusal::InsufficientUserQuota)
        );
        let held = reload(&store, "h1").await;
        assert_eq!((held.quota.get(), held.held_quota.get()), (5_000, 3_000));

        let s = settlement("r1", u, t, 68);
        assert_eq!(
            store.settle(&s).await.expect("settle"),
            SettleOutcome::Settled
        );
        assert_eq!(
            store.settle(&s).await.expect("again"),
            SettleOutcome::AlreadyFinished
        );
        assert!(!store.release("r1").await.expect("release after settle"));
        let after = reload(&store, "h1").await;
        assert_eq!(after.quota.get(), 5_000 - 68, "{}", store.backend_name());
        assert_eq!(after.held_quota.get(), 0);
        assert_eq!(after.used_quota.get(), 68);
        assert_eq!(after.total_requests, 1);
        let rows = store.recent_consumption(u, 10).await.expect("logs");
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].prompt_tokens, rows[0].completion_tokens), (14, 18));
        assert_eq!(rows[0].request_id, "r1");
    }
}

#[tokio::test]
async fn release_gives_everything_back_and_blocks_a_later_settle() {
    for store in stores().await {
        let (u, t) = funded(&store, "h2", "1", None).await;
        store
            .hold(&hold("r1", u, t, 10_000), NOW)
            .await
            .expect("hold")
            .expect("fits");
        assert!(store.release("r1").await.expect("release"));
        assert!(!store.release("r1").await.expect("second release"));
        assert_eq!(
            store
                .settle(&settlement("r1", u, t, 50))
                .await
                .expect("settle"),
            SettleOutcome::AlreadyFinished
        );
        let after = reload(&store, "h2").await;
        assert_eq!(
            (
                after.quota.get(),
                after.held_quota.get(),
                after.total_requests
            ),
            (500_000, 0, 0)
        );
    }
}

#[tokio::test]
async fn an_expired_hold_is_released_and_a_late_settle_still_charges_once() {
    for store in stores().await {
        let (u, t) = funded(&store, "h3", "1", None).await;
        let mut h = hold("r-old", u, t, 100_000);
        h.expires_at = UnixTime::from_secs(NOW.secs() - 1);
        store.hold(&h, NOW).await.expect("hold").expect("fits");
        store
            .hold(&hold("r-new", u, t, 1_000), NOW)
            .await
            .expect("hold")
            .expect("fits");
        assert_eq!(store.expire_holds(NOW, 100).await.expect("sweep"), 1);
        assert_eq!(store.expire_holds(NOW, 100).await.expect("sweep again"), 0);
        assert_eq!(reload(&store, "h3").await.held_quota.get(), 1_000);
        let late = settlement("r-old", u, t, 700);
        assert_eq!(
            store.settle(&late).await.expect("late"),
            SettleOutcome::SettledAfterExpiry
        );
        assert_eq!(
            store.settle(&late).await.expect("again"),
            SettleOutcome::AlreadyFinished
        );
        let after = reload(&store, "h3").await;
        assert_eq!(
            (after.quota.get(), after.held_quota.get()),
            (500_000 - 700, 1_000)
        );
    }
}

#[tokio::test]
async fn key_caps_and_key_state_are_enforced_by_the_hold() {
    for store in stores().await {
        let (u, t) = funded(&store, "h4", "10", Some(Quota::new(1_000))).await;
        assert_eq!(
            store
                .hold(&hold("r1", u, t, 1_001), NOW)
                .await
                .expect("hold"),
            Err(HoldRefusal::InsufficientKeyQuota)
        );
        store
            .hold(&hold("r2", u, t, 600), NOW)
            .await
            .expect("hold")
            .expect("fits");
        assert_eq!(
            store.hold(&hold("r3", u, t, 401), NOW).await.expect("hold"),
            Err(HoldRefusal::InsufficientKeyQuota)
        );
        // A refused hold leaves the user's side untouched too.
        assert_eq!(reload(&store, "h4").await.held_quota.get(), 600);
        store
            .settle(&settlement("r2", u, t, 600))
            .await
            .expect("settle");
        assert_eq!(
            store.hold(&hold("r4", u, t, 401), NOW).await.expect("hold"),
            Err(HoldRefusal::InsufficientKeyQuota)
        );
        // Expired and deleted keys.
        let later = UnixTime::from_secs(NOW.secs() + 31 * 86_400);
        assert_eq!(
            store.hold(&hold("r5", u, t, 1), later).await.expect("hold"),
            Err(HoldRefusal::TokenExpired)
        );
        assert!(store.delete_token(u, t).await.expect("delete"));
        assert_eq!(
            store.hold(&hold("r6", u, t, 1), NOW).await.expect("hold"),
            Err(HoldRefusal::TokenNotFound)
        );
        assert_eq!(reload(&store, "h4").await.held_quota.get(), 0);
    }
}

#[tokio::test]
async fn usage_above_the_hold_is_charged_in_full() {
    for store in stores().await {
        let (u, t) = funded(&store, "h5", "0.01", None).await;
        store
            .hold(&hold("r1", u, t, 4_000), NOW)
            .await
            .expect("hold")
            .expect("fits");
        store
            .settle(&settlement("r1", u, t, 5_500))
            .await
            .expect("settle");
        let after = reload(&store, "h5").await;
        // Below zero by exactly the excess over the balance, never more.
        assert_eq!((after.quota.get(), after.held_quota.get()), (-500, 0));
        assert_eq!(
            store.hold(&hold("r2", u, t, 1), NOW).await.expect("hold"),
            Err(HoldRefusal::InsufficientUserQuota)
        );
    }
}

#[tokio::test]
async fn concurrent_holds_never_overcommit_a_balance() {
    for store in stores().await {
        // 50,000 quota; 200 racing holds of 5,000: exactly 10 fit.
        let (u, t) = funded(&store, "h6", "0.1", None).await;
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                store
                    .hold(&hold(&format!("race-{i}"), u, t, 5_000), NOW)
                    .await
            }));
        }
        let mut won = Vec::new();
        for (i, task) in tasks.into_iter().enumerate() {
            if task.await.expect("join").expect("hold") == Ok(()) {
                won.push(i);
            }
        }
        assert_eq!(won.len(), 10, "{}", store.backend_name());
        let mid = reload(&store, "h6").await;
        assert_eq!((mid.quota.get(), mid.held_quota.get()), (50_000, 50_000));
        // Settle them all concurrently, each twice: charged once each.
        let mut settles = Vec::new();
        for i in won.iter().chain(won.iter()) {
            let store = Arc::clone(&store);
            let s = settlement(&format!("race-{i}"), u, t, 4_000);
            settles.push(tokio::spawn(async move { store.settle(&s).await }));
        }
        let mut settled = 0;
        for s in settles {
            if s.await.expect("join").expect("settle") == SettleOutcome::Settled {
                settled += 1;
            }
        }
        assert_eq!(settled, 10);
        let after = reload(&store, "h6").await;
        assert_eq!(
            (
                after.quota.get(),
                after.held_quota.get(),
                after.total_requests
            ),
            (10_000, 0, 10)
        );
        assert_eq!(consumed(&store, u).await, 10);
    }
}

#[tokio::test]
async fn a_batch_settles_each_call_once_whatever_state_its_hold_is_in() {
    for store in stores().await {
        let (u, t) = funded(&store, "b1", "1", None).await;
        // A second user, with a key of its own.
        let (u2, t2) = testing::funded(&store, "b2", "1", None, 8, NOW).await;
        for (id, user, token) in [("a", u, t), ("b", u, t), ("c", u2, t2), ("gone", u, t)] {
            store
                .hold(&hold(id, user, token, 10_000), NOW)
                .await
                .expect("hold")
                .expect("fits");
        }
        let mut old = hold("old", u, t, 5_000);
        old.expires_at = UnixTime::from_secs(NOW.secs() - 1);
        store.hold(&old, NOW).await.expect("hold").expect("fits");
        assert_eq!(store.expire_holds(NOW, 10).await.expect("sweep"), 1);
        assert!(store.release("gone").await.expect("release"));
        let batch = [
            settlement("a", u, t, 100),
            settlement("b", u, t, 200),
            settlement("c", u2, t2, 300),
            settlement("old", u, t, 400),
            settlement("gone", u, t, 500),
            settlement("a", u, t, 100),
        ];
        assert_eq!(
            store
                .settle_batch(&batch, BatchAttempt::First)
                .await
                .expect("batch"),
            [
                SettleOutcome::Settled,
                SettleOutcome::Settled,
                SettleOutcome::Settled,
                SettleOutcome::SettledAfterExpiry,
                SettleOutcome::AlreadyFinished,
                SettleOutcome::AlreadyFinished,
            ]
        );
        // Written again (a retry after an unclear failure): nothing moves.
        assert!(
            store
                .settle_batch(&batch, BatchAttempt::Retry)
                .await
                .expect("again")
                .iter()
                .all(|o| *o == SettleOutcome::AlreadyFinished)
        );
        let one = reload(&store, "b1").await;
        assert_eq!(book(&one), (500_000 - 700, 0, 700, 3));
        let two = reload(&store, "b2").await;
        assert_eq!((two.quota.get(), two.held_quota.get()), (500_000 - 300, 0));
        let logged = |user| consumed(&store, user);
        assert_eq!((logged(u).await, logged(u2).await), (3, 1));
    }
}

#[tokio::test]
async fn a_batch_of_many_users_charges_each_its_own_amounts() {
    for store in stores().await {
        // Many users in one batch, every one charged a different amount (each row of the
        // users', keys' and leases' statements its own): half from a hold, half from a lease.
        let n = 61;
        let mut people = Vec::new();
        let mut batch = Vec::new();
        for i in 0..n {
            let name = format!("many-{i}");
            let fill = u8::try_from(100 + i).expect("a distinct key each");
            let (u, t) = testing::funded(&store, &name, "1", None, fill, NOW).await;
            let id = format!("many-call-{i}");
            let lease = if i % 2 == 0 {
                store
                    .hold(&hold(&id, u, t, 10_000 + i), NOW)
                    .await
                    .expect("hold")
                    .expect("fits");
                None
            } else {
                Some(leased(&store, u, 20_000 + i).await)
            };
            batch.push(Settlement {
                lease: lease.as_ref().map(|l| l.id.clone()),
                ..settlement(&id, u, t, 100 + i)
            });
            people.push((name, t, lease));
        }
        let outcomes = store
            .settle_batch(&batch, BatchAttempt::First)
            .await
            .expect("batch");
        assert_eq!(outcomes, vec![SettleOutcome::Settled; batch.len()]);
        for (i, (name, t, lease)) in (0..).zip(&people) {
            let user = reload(&store, name).await;
            // A lease's row keeps holding its call's charge until folded; a hold gives its
            // reservation back.
            let held = if lease.is_some() { 20_000 + i } else { 0 };
            assert_eq!(
                book(&user),
                (500_000 - (100 + i), held, 100 + i, 1),
                "{name}"
            );
            let key = store.find_tokens(&[*t]).await.expect("key");
            assert_eq!(key[0].used_quota.get(), 100 + i, "{name}'s key");
            if let Some(lease) = lease {
                assert_eq!(
                    store.end_lease(&lease.id).await.expect("end"),
                    Some(Quota::new(held)),
                    "{name}'s lease"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_lease_call_is_charged_once_in_its_batch_and_a_retry_finds_it_written() {
    for store in stores().await {
        let (u, t) = funded(&store, "lease-once", "1", None).await;
        let lease = leased(&store, u, 10_000).await;
        let s = Settlement {
            lease: Some(lease.id.clone()),
            ..settlement("lease-once-1", u, t, 100)
        };
        // Listed twice in its first attempt: charged once.
        let batch = [s.clone(), s];
        let first = store
            .settle_batch(&batch, BatchAttempt::First)
            .await
            .expect("batch");
        assert_eq!(
            first,
            [SettleOutcome::Settled, SettleOutcome::AlreadyFinished]
        );
        // A retry (the first attempt's answer lost) finds the batch's receipt written.
        let again = store
            .settle_batch(&batch, BatchAttempt::Retry)
            .await
            .expect("again");
        assert_eq!(again, [SettleOutcome::AlreadyFinished; 2]);
        let user = reload(&store, "lease-once").await;
        assert_eq!(book(&user), (500_000 - 100, 10_000, 100, 1));
        assert_eq!(consumed(&store, u).await, 1);
        assert_eq!(
            store.end_lease(&lease.id).await.expect("end"),
            Some(Quota::new(10_000))
        );
        assert_eq!(
            book(&reload(&store, "lease-once").await),
            (500_000 - 100, 0, 100, 1)
        );
    }
}

/// MariaDB only (SQLite has one writer): a retry's receipt insert waits for an earlier attempt
/// whose COMMIT is still under way, and then finds the batch written. A plain read would not
/// wait (it sees its snapshot) and, the call's lease being gone, nothing else would stop a
/// second charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_waits_for_an_earlier_attempt_still_committing_and_charges_nothing_again() {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    let Some(url) = testing::mysql_url().await.expect("server") else {
        return;
    };
    let store = Arc::new(SeaStore::connect(&url).await.expect("connect"));
    store.migrate().await.expect("migrate");
    let (u, t) = funded(&store, "committing", "1", None).await;
    let lease = leased(&store, u, 10_000).await;
    // Its instance was reaped, say: a late call of the lease has no row to prove anything.
    assert_eq!(
        store.end_lease(&lease.id).await.expect("end"),
        Some(Quota::new(10_000))
    );
    let s = Settlement {
        lease: Some(lease.id.clone()),
        ..settlement("committing-1", u, t, 100)
    };
    // The first attempt has written the batch's receipt and its call's log row; its COMMIT is
    // not through yet.
    let receipt = BatchReceipt::of(std::slice::from_ref(&s)).expect("a lease call");
    let first = Database::connect(&url).await.expect("connect");
    let txn = first.begin().await.expect("begin");
    txn.execute_unprepared(&format!(
        "INSERT INTO settle_receipts (at, digest) VALUES ({}, {})",
        receipt.at().secs(),
        receipt.digest()
    ))
    .await
    .expect("receipt");
    txn.execute_unprepared(&format!(
        "INSERT INTO logs (user_id, kind, created_at, model, token_id, token_name, \
         prompt_tokens, completion_tokens, quota, request_id, is_stream, latency_ms, channel_id) \
         VALUES ({}, {}, {}, 'qwen-turbo', {}, 'key', 14, 18, 100, 'committing-1', 0, 5, NULL)",
        u.get(),
        LogKind::Consume.code(),
        NOW.secs(),
        t.get()
    ))
    .await
    .expect("insert");
    let retry = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.settle_batch(&[s], BatchAttempt::Retry).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !retry.is_finished(),
        "the retry waits for the attempt under way"
    );
    txn.commit().await.expect("commit");
    let outcome = retry.await.expect("task").expect("settle");
    assert_eq!(outcome, [SettleOutcome::AlreadyFinished]);
    assert_eq!(consumed(&store, u).await, 1);
    let user = reload(&store, "committing").await;
    assert_eq!((user.quota.get(), user.held_quota.get()), (500_000, 0));
}

#[tokio::test]
async fn a_lease_grows_only_within_the_headroom_and_never_once_it_is_gone() {
    for store in stores().await {
        let (u, _) = funded(&store, "grow", "1", None).await;
        let lease = lease_of(u);
        // Each step: (amount, headroom, create) → the outcome and the user's holds after it.
        let steps = [
            ((100_000, 1, true), LeaseGrowth::Grown, 100_000),
            // 4 × 100,000 of 400,000 free: exactly enough.
            ((100_000, 4, false), LeaseGrowth::Grown, 200_000),
            // 2 × 200,000 of 300,000 free: refused, and nothing moves.
            ((200_000, 2, false), LeaseGrowth::Refused, 200_000),
            ((100_000, 3, false), LeaseGrowth::Grown, 300_000),
        ];
        for ((amount, headroom, create), outcome, held) in steps {
            let grown = store
                .grow_lease(
                    &lease,
                    Quota::new(amount),
                    Quota::ZERO,
                    headroom,
                    create,
                    NOW,
                )
                .await
                .expect("grow");
            assert_eq!(grown, outcome, "{amount} with headroom {headroom}");
            let user = reload(&store, "grow").await;
            assert_eq!((user.quota.get(), user.held_quota.get()), (500_000, held));
        }
        // The row holds what the user's holds say it does; once ended it never grows again.
        assert_eq!(
            store.end_lease(&lease.id).await.expect("end"),
            Some(Quota::new(300_000))
        );
        let grown = store
            .grow_lease(&lease, Quota::new(1), Quota::ZERO, 1, false, NOW)
            .await
            .expect("grow");
        assert_eq!(grown, LeaseGrowth::Lost);
        let user = reload(&store, "grow").await;
        assert_eq!((user.quota.get(), user.held_quota.get()), (500_000, 0));
    }
}

#[tokio::test]
async fn a_lease_holds_its_calls_charges_until_a_growth_or_shrink_folds_them() {
    for store in stores().await {
        let (u, t) = funded(&store, "fold", "1", None).await;
        let lease = leased(&store, u, 100_000).await;
        let call = |i: usize, quota: i64| Settlement {
            lease: Some(lease.id.clone()),
            ..settlement(&format!("fold-{i}"), u, t, quota)
        };
        // Settles the calls in one batch; each must be settled.
        let settle = |calls: Vec<Settlement>| {
            let store = &store;
            async move {
                let settled = store
                    .settle_batch(&calls, BatchAttempt::First)
                    .await
                    .expect("batch");
                assert_eq!(settled, vec![SettleOutcome::Settled; calls.len()]);
            }
        };
        settle(vec![call(1, 30_000), call(2, 20_000)]).await;
        // Charged to the balance; the row still holds the charges: free 400,000 reads 350,000.
        assert_eq!(
            book(&reload(&store, "fold").await),
            (450_000, 100_000, 50_000, 2)
        );
        // A growth of 100,000 under headroom 4 needs 400,000 free: only with the fold of the
        // 50,000 spent is there enough, and the fold and growth move together.
        let grow = |amount: i64, fold: i64| {
            store.grow_lease(&lease, Quota::new(amount), Quota::new(fold), 4, false, NOW)
        };
        assert_eq!(grow(100_000, 0).await.expect("grow"), LeaseGrowth::Refused);
        assert_eq!(
            book(&reload(&store, "fold").await),
            (450_000, 100_000, 50_000, 2)
        );
        assert_eq!(
            grow(100_000, 50_000).await.expect("grow"),
            LeaseGrowth::Grown
        );
        assert_eq!(
            book(&reload(&store, "fold").await),
            (450_000, 150_000, 50_000, 2)
        );
        // Another call, folded by a shrink that also gives back 40,000 unused.
        settle(vec![call(3, 10_000)]).await;
        assert!(
            store
                .shrink_lease(&lease.id, Quota::new(50_000))
                .await
                .expect("shrink")
        );
        assert_eq!(
            book(&reload(&store, "fold").await),
            (440_000, 100_000, 60_000, 3)
        );
        // Ending it gives back what the row holds: whatever was not folded comes back too.
        settle(vec![call(4, 5_000)]).await;
        assert_eq!(
            store.end_lease(&lease.id).await.expect("end"),
            Some(Quota::new(100_000))
        );
        assert_eq!(book(&reload(&store, "fold").await), (435_000, 0, 65_000, 4));
        assert_eq!(consumed(&store, u).await, 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_racing_releases_and_each_other_move_each_hold_once() {
    for store in stores().await {
        let (u, t) = funded(&store, "race-b", "10", None).await;
        let n = 40;
        for i in 0..n {
            store
                .hold(&hold(&format!("r{i}"), u, t, 1_000), NOW)
                .await
                .expect("hold")
                .expect("fits");
        }
        // Two overlapping batches settle every call; a third task releases every fourth call.
        let all: Vec<Settlement> = (0..n)
            .map(|i| settlement(&format!("r{i}"), u, t, 10))
            .collect();
        let mut tasks = Vec::new();
        for part in [all[..30].to_vec(), all[10..].to_vec()] {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                store
                    .settle_batch(&part, BatchAttempt::Retry)
                    .await
                    .expect("batch")
                    .iter()
                    .filter(|o| **o == SettleOutcome::Settled)
                    .count()
            }));
        }
        let releaser = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut released = 0;
                for i in (0..n).step_by(4) {
                    if store.release(&format!("r{i}")).await.expect("release") {
                        released += 1;
                    }
                }
                released
            })
        };
        let mut settled = 0;
        for task in tasks {
            settled += task.await.expect("task");
        }
        let released = releaser.await.expect("task");
        assert_eq!(settled + released, n, "every hold finished exactly once");
        let after = reload(&store, "race-b").await;
        assert_eq!(
            (
                after.quota.get(),
                after.held_quota.get(),
                after.total_requests
            ),
            (
                5_000_000 - 10 * i64::try_from(settled).expect("count"),
                0,
                i64::try_from(settled).expect("count")
            )
        );
    }
}

#[tokio::test]
async fn a_settled_calls_log_row_holds_what_its_settlement_says() {
    for store in stores().await {
        let (u, t) = testing::funded(&store, "fields", "1", None, 205, NOW).await;
        let lease = leased(&store, u, 100_000).await;
        // Every field different between the two calls, and from the helper's defaults.
        let calls = [
            Settlement {
                token_name: "first key".into(),
                model: "model-a".into(),
                usage: Usage::new(11, 22),
                is_stream: true,
                latency_ms: 333,
                at: UnixTime::from_secs(NOW.secs() + 7),
                lease: Some(lease.id.clone()),
                ..settlement("fields-1", u, t, 44)
            },
            Settlement {
                token_name: "second key".into(),
                model: "model-b".into(),
                usage: Usage::new(55, 66),
                is_stream: false,
                latency_ms: 777,
                at: UnixTime::from_secs(NOW.secs() + 8),
                ..settlement("fields-2", u, t, 88)
            },
        ];
        store
            .hold(&hold("fields-2", u, t, 1_000), NOW)
            .await
            .expect("db")
            .expect("held");
        let outcomes = store
            .settle_batch(&calls, BatchAttempt::First)
            .await
            .expect("batch");
        assert_eq!(outcomes, vec![SettleOutcome::Settled; 2]);
        let mut rows = consume_page(&store, u, 1, 10).await.entries;
        rows.reverse();
        assert_eq!(rows.len(), 2);
        for (row, call) in rows.iter().zip(&calls) {
            assert_eq!(row.user_id, u);
            assert_eq!(row.kind, LogKind::Consume);
            assert_eq!(row.created_at, call.at);
            assert_eq!(row.model, call.model);
            assert_eq!(row.token_id, Some(t));
            assert_eq!(row.token_name, call.token_name);
            assert_eq!(row.prompt_tokens, call.usage.prompt_tokens as i64);
            assert_eq!(row.completion_tokens, call.usage.completion_tokens as i64);
            assert_eq!(row.quota, call.quota);
            assert_eq!(row.request_id, call.request_id);
            assert_eq!(row.is_stream, call.is_stream);
            assert_eq!(row.latency_ms, call.latency_ms);
        }
    }
}

#[tokio::test]
async fn a_batch_of_any_size_logs_each_call_once_in_the_batch_order() {
    for store in stores().await {
        // Sizes around the statements' own (SQLite inserts a power of two of rows at a time,
        // at most 256; `IN` lists are padded to a power of two).
        for (size, fill) in [(1_i64, 201_u8), (3, 202), (200, 203), (300, 204)] {
            let name = format!("order-{size}");
            let (u, t) = testing::funded(&store, &name, "1", None, fill, NOW).await;
            let lease = leased(&store, u, 100_000).await;
            let batch: Vec<Settlement> = (0..size)
                .map(|i| Settlement {
                    lease: Some(lease.id.clone()),
                    ..settlement(&format!("order-{size}-{i}"), u, t, i + 1)
                })
                .collect();
            let outcomes = store
                .settle_batch(&batch, BatchAttempt::First)
                .await
                .expect("batch");
            assert_eq!(outcomes, vec![SettleOutcome::Settled; batch.len()]);
            // Newest first, ties by id: the batch's rows, read back to front, in its order.
            let mut logged = Vec::new();
            for page in 1.. {
                let rows = consume_page(&store, u, page, 100).await;
                if rows.entries.is_empty() {
                    break;
                }
                logged.extend(
                    rows.entries
                        .into_iter()
                        .map(|r| (r.request_id, r.quota.get())),
                );
            }
            logged.reverse();
            let expected: Vec<(String, i64)> = batch
                .iter()
                .map(|s| (s.request_id.clone(), s.quota.get()))
                .collect();
            assert_eq!(logged, expected, "a batch of {size}");
            let user = reload(&store, &name).await;
            let spent = size * (size + 1) / 2;
            // The lease's row still holds the charges (not folded).
            assert_eq!(book(&user), (500_000 - spent, 100_000, spent, size));
        }
    }
}
