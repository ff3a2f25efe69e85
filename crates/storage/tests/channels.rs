//! Channels and prices on every configured backend: round trip of a channel's settings, and
//! automatic status switches that never override an admin's.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use rust_decimal::Decimal;
use tollgate_domain::channel::{ChannelInput, ChannelStatus};
use tollgate_domain::pricing::Price;
use tollgate_domain::repository::{ChannelRepository, PriceRepository};
use tollgate_domain::time::UnixTime;
use tollgate_storage::testing;

const NOW: UnixTime = UnixTime::from_secs(1_764_000_000);

#[tokio::test]
async fn channels_round_trip_and_automatic_switches_respect_the_admin() {
    for store in testing::stores().await.expect("test databases") {
        let spec = ChannelInput {
            name: Some("通道 1".into()),
            kind: Some("deepseek".into()),
            key: Some("sk-secret".into()),
            models: Some(vec!["deepseek-chat".into()]),
            model_mapping: Some([("deepseek-chat".to_owned(), "deepseek-v3".to_owned())].into()),
            priority: Some(-3),
            weight: Some(7),
            ..Default::default()
        }
        .into_spec(|_| true)
        .expect("valid");
        let c = store.insert_channel(&spec, NOW).await.expect("insert");
        let listed = store.list_channels().await.expect("list");
        assert_eq!(listed, vec![c.clone()], "{}", store.backend_name());
        assert_eq!(listed[0].spec.key.expose(), "sk-secret");

        // Tollgate disables an enabled channel...
        assert!(
            store
                .set_channel_status(
                    c.id,
                    ChannelStatus::AutoDisabled,
                    "401",
                    NOW,
                    Some(ChannelStatus::Enabled)
                )
                .await
                .expect("auto")
        );
        // ...the admin disables it too; the probe's revival must not undo that.
        assert!(
            store
                .set_channel_status(c.id, ChannelStatus::Disabled, "admin", NOW, None)
                .await
                .expect("admin")
        );
        assert!(
            !store
                .set_channel_status(
                    c.id,
                    ChannelStatus::Enabled,
                    "",
                    NOW,
                    Some(ChannelStatus::AutoDisabled)
                )
                .await
                .expect("probe")
        );
        // And an automatic disable never turns an admin's "disabled" into a probed one.
        assert!(
            !store
                .set_channel_status(
                    c.id,
                    ChannelStatus::AutoDisabled,
                    "x",
                    NOW,
                    Some(ChannelStatus::Enabled)
                )
                .await
                .expect("auto")
        );
        assert_eq!(
            store.list_channels().await.expect("list")[0].status,
            ChannelStatus::Disabled
        );

        assert!(store.delete_channel(c.id).await.expect("delete"));
        assert!(!store.delete_channel(c.id).await.expect("again"));
        assert!(
            !store
                .set_channel_status(c.id, ChannelStatus::Enabled, "", NOW, None)
                .await
                .expect("gone")
        );
    }
}

#[tokio::test]
async fn prices_are_seeded_and_kept_exact() {
    for store in testing::stores().await.expect("test databases") {
        let seeded = store.list_prices().await.expect("prices");
        // Seven from the relay migration, five from the one for Claude, Gemini and embeddings.
        assert_eq!(seeded.len(), 12);
        let price = |m: &str| seeded.iter().find(|(n, _)| n == m).map(|(_, p)| *p);
        let claude = price("claude-sonnet-4-5").expect("seeded");
        assert_eq!(
            (claude.input(), claude.output(), claude.cached_input()),
            (
                "3".parse().expect("d"),
                "15".parse().expect("d"),
                "0.3".parse().expect("d")
            )
        );
        let embedding = price("text-embedding-3-small").expect("seeded");
        assert_eq!(
            (embedding.input(), embedding.output()),
            ("0.02".parse().expect("d"), Decimal::ZERO)
        );
        let p = Price::new(
            "0.000001".parse().expect("d"),
            "99999.999999".parse().expect("d"),
            Decimal::ZERO,
        )
        .expect("price");
        store.put_price("qwen-turbo", &p, NOW).await.expect("put");
        store
            .put_price("qwen-turbo", &p, NOW)
            .await
            .expect("put again");
        let got = store.list_prices().await.expect("prices");
        assert_eq!(got.len(), 12);
        assert_eq!(
            got.iter().find(|(m, _)| m == "qwen-turbo").map(|(_, p)| *p),
            Some(p)
        );
    }
}
