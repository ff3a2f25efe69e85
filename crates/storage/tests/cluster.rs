//! The change log and the instance registry on every configured backend: changes come back in
//! order after a position and are pruned by age; reaping releases exactly the holds of dead,
//! restarted and unregistered instances, never a live one's nor one older than the registry.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use tollgate_domain::Quota;
use tollgate_domain::billing::{Hold, SettleOutcome, Settlement};
use tollgate_domain::cluster::{
    CacheChange, ChangeLog, Instance, InstanceId, InstanceRegistry, Reaped,
};
use tollgate_domain::ids::{ExternalUserId, PlatformId, TokenId, UserId};
use tollgate_domain::pricing::Usage;
use tollgate_domain::repository::{BillingRepository, UserRepository};
use tollgate_domain::time::UnixTime;
use tollgate_domain::user::User;
use tollgate_storage::{SeaStore, testing};

const NOW: UnixTime = UnixTime::from_secs(1_764_000_000);

fn at(offset: i64) -> UnixTime {
    UnixTime::from_secs(NOW.secs() + offset)
}

fn instance(id: &str, name: &str) -> Instance {
    Instance::new(InstanceId::parse(id).expect("id"), name)
}

#[tokio::test]
async fn the_change_log_reads_in_order_after_a_position_and_prunes_by_age() {
    for store in testing::stores().await.expect("test databases") {
        let me = InstanceId::parse("a").expect("id");
        assert_eq!(store.last_change_id().await.expect("empty"), 0);
        let one = store
            .append_change(CacheChange::Channels, &me, at(0))
            .await
            .expect("append");
        let two = store
            .append_change(CacheChange::Token(TokenId::new(9)), &me, at(10))
            .await
            .expect("append");
        let three = store
            .append_change(
                CacheChange::Prices,
                &InstanceId::parse("b").expect("id"),
                at(20),
            )
            .await
            .expect("append");
        assert!(one < two && two < three);
        assert_eq!(store.last_change_id().await.expect("last"), three);
        let after_one = store.changes_since(one, 100).await.expect("since");
        let got: Vec<_> = after_one
            .iter()
            .map(|c| (c.change, c.origin.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (CacheChange::Token(TokenId::new(9)), "a"),
                (CacheChange::Prices, "b")
            ],
            "{}",
            store.backend_name()
        );
        assert_eq!(store.changes_since(0, 1).await.expect("limit").len(), 1);
        assert_eq!(store.prune_changes(at(15)).await.expect("prune"), 2);
        let left = store.changes_since(0, 100).await.expect("rest");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, three);
    }
}

/// A user with $1 and a key; (user, token).
async fn funded(store: &SeaStore, id: &str, fill: u8) -> (UserId, TokenId) {
    testing::funded(store, id, "1", None, fill, NOW).await
}

async fn user(store: &SeaStore, id: &str) -> User {
    store
        .find_user(
            &PlatformId::from_secret("platform-a"),
            &ExternalUserId::parse(id).expect("id"),
        )
        .await
        .expect("find")
        .expect("user")
}

async fn hold(store: &SeaStore, request: &str, owner: (UserId, TokenId), by: &str) {
    store
        .hold(
            &Hold {
                request_id: request.into(),
                user_id: owner.0,
                token_id: owner.1,
                amount: Quota::new(1_000),
                created_at: NOW,
                expires_at: at(3_600),
                instance: InstanceId::parse(by)
                    .unwrap_or_else(|| InstanceId::parse("x").expect("id")),
                capped_key: false,
            },
            NOW,
        )
        .await
        .expect("hold")
        .expect("fits");
}

#[tokio::test]
async fn reaping_releases_the_holds_of_dead_restarted_and_unknown_instances_only() {
    for store in testing::stores().await.expect("test databases") {
        let backend = store.backend_name();
        let owner = funded(&store, "reap", 3).await;
        let me = instance("me-2", "gw-1:3000");
        let previous = instance("me-1", "gw-1:3000");
        let live = instance("live", "gw-2:3000");
        let dead = instance("dead", "gw-3:3000");
        store.heartbeat(&previous, at(0)).await.expect("beat");
        store.heartbeat(&dead, at(0)).await.expect("beat");
        store.heartbeat(&live, at(0)).await.expect("beat");
        store.heartbeat(&live, at(100)).await.expect("beat again");
        store.heartbeat(&me, at(100)).await.expect("beat");
        for (request, by) in [
            ("r-me", "me-2"),
            ("r-previous", "me-1"),
            ("r-live", "live"),
            ("r-dead", "dead"),
            ("r-gone", "gone"),
        ] {
            hold(&store, request, owner, by).await;
        }
        assert_eq!(user(&store, "reap").await.held_quota.get(), 5_000);

        // Stale before 50: `dead` (last seen at 0) is dead, `live` (100) is not; `me-1` bears my
        // name; `gone` never registered.
        let reaped = store.reap(&me, at(50)).await.expect("reap");
        assert_eq!(
            reaped,
            Reaped {
                instances: 2,
                holds: 3
            },
            "{backend}"
        );
        assert_eq!(
            user(&store, "reap").await.held_quota.get(),
            2_000,
            "mine and the live one's stay held"
        );
        assert_eq!(
            store.reap(&me, at(50)).await.expect("again"),
            Reaped::default()
        );

        // A late settlement of a reaped hold still charges, once.
        let late = Settlement {
            request_id: "r-dead".into(),
            user_id: owner.0,
            token_id: owner.1,
            token_name: "key".into(),
            model: "m".into(),
            usage: Usage::new(1, 1),
            quota: Quota::new(300),
            is_stream: true,
            latency_ms: 1,
            channel_id: None,
            lease: None,
            at: at(60),
        };
        assert_eq!(
            store.settle(&late).await.expect("settle"),
            SettleOutcome::SettledAfterExpiry
        );
        assert_eq!(
            store.settle(&late).await.expect("again"),
            SettleOutcome::AlreadyFinished
        );
        let after = user(&store, "reap").await;
        assert_eq!(
            (after.quota.get(), after.held_quota.get()),
            (500_000 - 300, 2_000)
        );

        // Once `live` stops heartbeating too, its hold goes; mine never does.
        store.deregister(&live.id).await.expect("leave");
        let reaped = store.reap(&me, at(200)).await.expect("reap");
        assert_eq!(reaped.holds, 1, "{backend}");
        assert_eq!(user(&store, "reap").await.held_quota.get(), 1_000);
    }
}
