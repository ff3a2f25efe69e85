//! Repository behaviour on every configured backend: SQLite always, MariaDB/MySQL when
//! `TOLLGATE_TEST_MYSQL_URL` is set. The concurrency tests use real parallel connections.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use std::str::FromStr;
use std::sync::Arc;
use tollgate_domain::Quota;
use tollgate_domain::ids::{ExternalUserId, PlatformId, TokenId};
use tollgate_domain::logs::{LogKind, LogQueryInput, NewLogEntry};
use tollgate_domain::repository::{
    LogRepository, TokenRepository, TopUpRepository, UserRepository,
};
use tollgate_domain::time::UnixTime;
use tollgate_domain::token::{AccessKey, TokenRecord};
use tollgate_domain::topup::{NumberInput, TopUp, TopUpInput, TopUpOutcome};
use tollgate_domain::user::{SyncUser, SyncUserInput, User};
use tollgate_storage::{SeaStore, testing};

const NOW: UnixTime = UnixTime::from_secs(1_764_000_000);

async fn stores() -> Vec<Arc<SeaStore>> {
    testing::shared_stores().await
}

fn platform() -> PlatformId {
    PlatformId::from_secret("platform-a")
}

fn sync_cmd(id: &str, username: &str) -> SyncUser {
    SyncUserInput {
        external_user_id: Some(id.into()),
        username: Some(username.into()),
        ..Default::default()
    }
    .into_command()
    .expect("valid sync")
}

fn topup_cmd(id: &str, amount: &str, payment: &str) -> TopUp {
    TopUpInput {
        external_user_id: Some(id.into()),
        amount_usd: NumberInput::parse(amount),
        payment_id: Some(payment.into()),
    }
    .into_command()
    .expect("valid top-up")
}

async fn user(store: &SeaStore, p: &PlatformId, id: &str) -> User {
    store
        .find_user(p, &ExternalUserId::parse(id).expect("id"))
        .await
        .expect("query")
        .expect("user exists")
}

#[tokio::test]
async fn sync_creates_then_updates_only_the_fields_given() {
    for store in stores().await {
        let p = platform();
        let full = SyncUserInput {
            external_user_id: Some("u1".into()),
            username: Some("first".into()),
            display_name: Some("Display".into()),
            email: Some("a@example.com".into()),
            phone: Some("123".into()),
            login_type: Some("email".into()),
        };
        let created = store
            .sync_user(&p, &full.into_command().expect("valid"), NOW)
            .await
            .expect("sync");
        assert!(created.created);
        store
            .credit(&p, &topup_cmd("u1", "1", "pay-1"), NOW)
            .await
            .expect("credit");
        let updated = store
            .sync_user(&p, &sync_cmd("u1", "second"), NOW)
            .await
            .expect("sync");
        assert!(!updated.created);
        assert_eq!(updated.user.id, created.user.id);
        assert_eq!(updated.user.username, "second");
        assert_eq!(
            updated.user.display_name, "Display",
            "absent fields keep their value"
        );
        assert_eq!(updated.user.email, "a@example.com");
        assert_eq!(
            updated.user.quota,
            Quota::new(500_000),
            "sync never touches quota"
        );
    }
}

#[tokio::test]
async fn identifiers_match_byte_for_byte_and_per_platform() {
    for store in stores().await {
        let (a, b) = (PlatformId::from_secret("a"), PlatformId::from_secret("b"));
        let mut ids = std::collections::HashSet::new();
        for id in ["user", "User", "user ", "usér", "use\u{301}r", "u%", "u_"] {
            let out = store
                .sync_user(&a, &sync_cmd(id, "n"), NOW)
                .await
                .expect("sync");
            assert!(
                out.created,
                "{id:?} must be a new user on {}",
                store.backend_name()
            );
            ids.insert(out.user.id);
        }
        let other = store
            .sync_user(&b, &sync_cmd("user", "n"), NOW)
            .await
            .expect("sync");
        assert!(
            other.created,
            "same id under another platform is another user"
        );
        ids.insert(other.user.id);
        assert_eq!(ids.len(), 8);
        let missing = store
            .find_user(&b, &ExternalUserId::parse("User").expect("id"))
            .await
            .expect("query");
        assert!(
            missing.is_none(),
            "a platform never sees another platform's users"
        );
    }
}

#[tokio::test]
async fn a_payment_id_credits_once_and_replays_the_first_receipt() {
    for store in stores().await {
        let p = platform();
        store
            .sync_user(&p, &sync_cmd("u", "n"), NOW)
            .await
            .expect("sync");
        let first = store
            .credit(&p, &topup_cmd("u", "10", "pay"), NOW)
            .await
            .expect("credit");
        let TopUpOutcome::Credited(receipt) = first else {
            panic!("first credit: {first:?}")
        };
        assert_eq!(receipt.quota_after, Quota::new(5_000_000));
        store
            .credit(&p, &topup_cmd("u", "1", "pay-2"), NOW)
            .await
            .expect("credit");
        let again = store
            .credit(&p, &topup_cmd("u", "10.00", "pay"), NOW)
            .await
            .expect("credit");
        let TopUpOutcome::AlreadyProcessed(old) = again else {
            panic!("replay: {again:?}")
        };
        assert_eq!(old, receipt, "the replay answers the original receipt");
        assert_eq!(user(&store, &p, "u").await.quota, Quota::new(5_500_000));
        let unknown = store
            .credit(&p, &topup_cmd("nobody", "1", "pay-3"), NOW)
            .await
            .expect("credit");
        assert_eq!(unknown, TopUpOutcome::UserNotFound);
        let other_platform = PlatformId::from_secret("other");
        store
            .sync_user(&other_platform, &sync_cmd("u", "n"), NOW)
            .await
            .expect("sync");
        let fresh = store
            .credit(&other_platform, &topup_cmd("u", "10", "pay"), NOW)
            .await
            .expect("credit");
        assert!(
            matches!(fresh, TopUpOutcome::Credited(_)),
            "payment ids are unique per platform"
        );
    }
}

#[tokio::test]
async fn concurrent_topups_credit_each_payment_id_exactly_once() {
    for store in stores().await {
        let p = platform();
        store
            .sync_user(&p, &sync_cmd("rich", "n"), NOW)
            .await
            .expect("sync");
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200 {
            let store = Arc::clone(&store);
            let p = p.clone();
            tasks.spawn(async move {
                store
                    .credit(
                        &p,
                        &topup_cmd("rich", "1.5", &format!("pay-{}", i % 20)),
                        NOW,
                    )
                    .await
            });
        }
        let (mut credited, mut replayed) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            match r.expect("task").expect("credit") {
                TopUpOutcome::Credited(_) => credited += 1,
                TopUpOutcome::AlreadyProcessed(_) => replayed += 1,
                TopUpOutcome::UserNotFound => panic!("user vanished"),
            }
        }
        assert_eq!(
            (credited, replayed),
            (20, 180),
            "on {}",
            store.backend_name()
        );
        assert_eq!(
            user(&store, &p, "rich").await.quota,
            Quota::new(20 * 750_000)
        );
        let q = LogQueryInput {
            kind: Some("topup".into()),
            ..Default::default()
        }
        .into_query()
        .expect("query");
        let page = store
            .log_page(user(&store, &p, "rich").await.id, &q)
            .await
            .expect("logs");
        assert_eq!(page.total, 20, "one log row per credit");
        assert_eq!(page.summary.topped_up, Quota::new(20 * 750_000));
    }
}

#[tokio::test]
async fn concurrent_syncs_create_one_user_and_never_touch_quota() {
    for store in stores().await {
        let p = platform();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let store = Arc::clone(&store);
            let p = p.clone();
            tasks.spawn(async move {
                store
                    .sync_user(&p, &sync_cmd("racer", &format!("name-{i}")), NOW)
                    .await
            });
        }
        let mut created = 0;
        let mut ids = std::collections::HashSet::new();
        while let Some(r) = tasks.join_next().await {
            let out = r.expect("task").expect("sync");
            created += usize::from(out.created);
            ids.insert(out.user.id);
        }
        assert_eq!((created, ids.len()), (1, 1), "on {}", store.backend_name());

        // Syncs racing with top-ups: the balance is exactly the sum of the top-ups.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..60 {
            let store = Arc::clone(&store);
            let p = p.clone();
            tasks.spawn(async move {
                if i % 3 == 0 {
                    store
                        .credit(
                            &p,
                            &topup_cmd("racer", "0.01", &format!("racer-pay-{i}")),
                            NOW,
                        )
                        .await
                        .map(|_| ())
                } else {
                    store
                        .sync_user(&p, &sync_cmd("racer", "again"), NOW)
                        .await
                        .map(|_| ())
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("task").expect("operation");
        }
        assert_eq!(
            user(&store, &p, "racer").await.quota,
            Quota::new(20 * 5_000)
        );
    }
}

#[tokio::test]
async fn tokens_store_the_hash_and_delete_only_for_their_owner() {
    for store in stores().await {
        let p = platform();
        let owner = store
            .sync_user(&p, &sync_cmd("owner", "n"), NOW)
            .await
            .expect("sync")
            .user;
        let other = store
            .sync_user(&p, &sync_cmd("other", "n"), NOW)
            .await
            .expect("sync")
            .user;
        let mut n = 7u8;
        let key = AccessKey::generate(|b| {
            b.iter_mut().for_each(|x| {
                *x = n;
                n = n.wrapping_mul(5).wrapping_add(3);
            })
        });
        let record = TokenRecord {
            user_id: owner.id,
            name: "k".into(),
            key_hash: key.hash(),
            hint: key.hint(),
            created_at: NOW,
            expires_at: NOW.plus_days(30),
            quota_limit: Some(Quota::new(1000)),
            limits: Default::default(),
        };
        let token = store.insert_token(&record).await.expect("insert");
        let listed = store.list_tokens(owner.id).await.expect("list");
        assert_eq!(listed, vec![token.clone()]);
        assert!(
            !store
                .delete_token(other.id, token.id)
                .await
                .expect("delete"),
            "not the owner"
        );
        assert!(
            !store
                .delete_token(owner.id, TokenId::new(999_999))
                .await
                .expect("delete")
        );
        assert!(
            store
                .delete_token(owner.id, token.id)
                .await
                .expect("delete")
        );
        assert!(store.list_tokens(owner.id).await.expect("list").is_empty());
    }
}

#[tokio::test]
async fn log_pages_filter_sort_and_summarise_the_whole_range() {
    for store in stores().await {
        let p = platform();
        let u = store
            .sync_user(&p, &sync_cmd("logger", "n"), NOW)
            .await
            .expect("sync")
            .user;
        let day = 86_400;
        for (i, model) in [
            "qwen-turbo",
            "qwen%plus",
            "deepseek_chat",
            "QWEN-TURBO",
            "qwen-turbo",
        ]
        .iter()
        .enumerate()
        {
            let i = i64::try_from(i).expect("small");
            store
                .append_log(&NewLogEntry {
                    user_id: u.id,
                    kind: LogKind::Consume,
                    created_at: UnixTime::from_secs(NOW.secs() + i * day),
                    model: (*model).into(),
                    token_id: None,
                    token_name: "k".into(),
                    prompt_tokens: 10,
                    completion_tokens: 5,
                    quota: Quota::new(100 + i),
                    request_id: format!("req-{i}"),
                    is_stream: i % 2 == 0,
                    latency_ms: 3,
                    channel_id: None,
                })
                .await
                .expect("append");
        }
        store
            .credit(&p, &topup_cmd("logger", "2", "log-pay"), NOW)
            .await
            .expect("credit");
        let query = |f: &dyn Fn(&mut LogQueryInput)| {
            let mut i = LogQueryInput::default();
            f(&mut i);
            i.into_query().expect("valid query")
        };
        let all = store
            .log_page(u.id, &query(&|i| i.page_size = Some("2".into())))
            .await
            .expect("page");
        assert_eq!(all.total, 6);
        assert_eq!(all.entries.len(), 2);
        assert_eq!(all.entries[0].request_id, "req-4", "newest first");
        assert_eq!(all.summary.total_tokens, 75);
        assert_eq!(all.summary.consumed, Quota::new(510));
        assert_eq!(all.summary.topped_up, Quota::new(1_000_000));
        let last = store
            .log_page(
                u.id,
                &query(&|i| {
                    i.page_size = Some("2".into());
                    i.page = Some("3".into());
                }),
            )
            .await
            .expect("page");
        assert_eq!(
            last.entries.iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec![LogKind::TopUp, LogKind::Consume],
            "same second: higher id first"
        );
        let percent = store
            .log_page(u.id, &query(&|i| i.model_name = Some("%".into())))
            .await
            .expect("page");
        assert_eq!(percent.total, 1, "% is a literal character");
        let underscore = store
            .log_page(u.id, &query(&|i| i.model_name = Some("_".into())))
            .await
            .expect("page");
        assert_eq!(underscore.total, 1, "_ is a literal character");
        let turbo = store
            .log_page(u.id, &query(&|i| i.model_name = Some("turbo".into())))
            .await
            .expect("page");
        assert_eq!(turbo.total, 2, "substring match is case-sensitive");
        let dates = store
            .log_page(
                u.id,
                &query(&|i| {
                    i.start_date = Some("2025-11-25".into());
                    i.end_date = Some("2025-11-25".into());
                }),
            )
            .await
            .expect("page");
        assert_eq!(dates.total, 1, "one row on that day");
        let usage = store.usage_by_model(u.id).await.expect("usage");
        let turbo_usage = usage
            .iter()
            .find(|m| m.model == "qwen-turbo")
            .expect("turbo");
        assert_eq!(
            (
                turbo_usage.requests,
                turbo_usage.prompt_tokens,
                turbo_usage.quota
            ),
            (2, 20, Quota::new(204))
        );
        assert_eq!(
            store
                .recent_consumption(u.id, 3)
                .await
                .expect("recent")
                .len(),
            3
        );
        let _ = rust_decimal::Decimal::from_str("1").expect("decimal");
    }
}
