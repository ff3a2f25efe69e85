//! End-to-end tests of the admin API (SPEC §5): authentication, channel CRUD with the key never
//! shown, validation, prices.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use reqwest::Method;
use serde_json::json;
use tollgate_tests::TestApp;

#[tokio::test]
async fn the_admin_key_is_required() {
    for app in TestApp::all().await {
        for key in [None, Some("wrong"), Some("platform-secret-a")] {
            let r = app
                .send(Method::GET, "/api/admin/channels", key, None, None)
                .await;
            r.assert_error(401, "unauthorized");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn channels_are_created_listed_updated_and_deleted_without_showing_keys() {
    for app in TestApp::all().await {
        let created = app
            .admin(
                Method::POST,
                "/channels",
                Some(json!({"name": "qwen", "type": "dashscope", "key": "sk-very-secret-key", "models": ["qwen-turbo", "qwen-plus"], "priority": 5})),
            )
            .await;
        let c = created.data().clone();
        assert_eq!(
            c["base_url"],
            "https://dashscope.aliyuncs.com/compatible-mode/v1"
        );
        assert_eq!(c["status"], "enabled");
        assert_eq!(c["weight"], 1);
        assert_eq!(c["has_key"], true);
        let id = c["id"].as_i64().expect("id");
        let listed = app.admin(Method::GET, "/channels", None).await;
        assert_eq!(listed.data().as_array().expect("list").len(), 1);
        let got = app
            .admin(Method::GET, &format!("/channels/{id}"), None)
            .await;
        assert_eq!(got.data()["name"], "qwen");
        let updated = app
            .admin(
                Method::PUT,
                &format!("/channels/{id}"),
                Some(json!({"name": "qwen-2", "weight": 7})),
            )
            .await;
        assert_eq!(updated.data()["name"], "qwen-2");
        assert_eq!(updated.data()["weight"], 7);
        assert_eq!(updated.data()["models"], json!(["qwen-turbo", "qwen-plus"]));
        for r in [&created, &listed, &got, &updated] {
            assert!(
                !r.body.to_string().contains("sk-very-secret"),
                "key shown: {}",
                r.body
            );
        }
        let disabled = app
            .admin(Method::POST, &format!("/channels/{id}/disable"), None)
            .await;
        assert_eq!(disabled.data()["status"], "disabled");
        app.admin(Method::DELETE, &format!("/channels/{id}"), None)
            .await
            .data();
        for (m, p) in [
            (Method::GET, format!("/channels/{id}")),
            (Method::DELETE, format!("/channels/{id}")),
            (Method::POST, format!("/channels/{id}/enable")),
            (Method::GET, "/channels/abc".to_owned()),
        ] {
            app.admin(m, &p, None)
                .await
                .assert_error(404, "channel_not_found");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn bad_channels_and_prices_are_400() {
    for app in TestApp::all().await {
        for body in [
            json!({"type": "openai", "key": "k", "models": ["gpt-4o"]}),
            json!({"name": "x", "type": "grpc", "key": "k", "models": ["gpt-4o"]}),
            json!({"name": "x", "type": "openai", "models": ["gpt-4o"]}),
            json!({"name": "x", "type": "openai", "key": "k", "models": []}),
            json!({"name": "x", "type": "openai", "key": "k", "models": ["unpriced-model"]}),
            json!({"name": "x", "type": "openai_compatible", "models": ["gpt-4o"]}),
            json!({"name": "x", "type": "openai", "key": "k", "models": ["gpt-4o"], "weight": -1}),
            json!({"name": "x", "type": "openai", "key": "k", "models": ["gpt-4o"], "surprise": 1}),
        ] {
            app.admin(Method::POST, "/channels", Some(body))
                .await
                .assert_error(400, "validation_error");
        }
        assert_eq!(
            app.admin(Method::GET, "/channels", None).await.data(),
            &json!([])
        );
        for body in [
            json!({"input": -1, "output": 1}),
            json!({"output": 1}),
            json!({"input": 1, "output": "2"}),
            json!({"input": 1, "output": 1e9}),
        ] {
            app.admin(Method::PUT, "/pricing/gpt-4o", Some(body))
                .await
                .assert_error(400, "validation_error");
        }
        let prices = app.admin(Method::GET, "/pricing", None).await;
        let p = prices.data();
        for m in [
            "qwen-turbo",
            "qwen-plus",
            "qwen-max",
            "deepseek-chat",
            "deepseek-reasoner",
            "gpt-4o",
            "gpt-4o-mini",
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
            "gemini-2.5-flash",
            "text-embedding-3-small",
            "text-embedding-3-large",
        ] {
            assert!(
                p[m]["input"].is_number() && p[m]["output"].is_number(),
                "{m} seeded: {p}"
            );
        }
        assert_eq!(
            p["gpt-4o"],
            json!({"input": 2.5, "output": 10, "cached_input": 1.25})
        );
        assert_eq!(
            p["claude-haiku-4-5"],
            json!({"input": 1, "output": 5, "cached_input": 0.1})
        );
        assert_eq!(
            p["gemini-2.5-flash"],
            json!({"input": 0.3, "output": 2.5, "cached_input": 0.075})
        );
        let put = app
            .admin(
                Method::PUT,
                "/pricing/my-model",
                Some(json!({"input": 0.3, "output": 0.6, "cached_input": 0.1})),
            )
            .await;
        assert_eq!(put.data()["model"], "my-model");
        assert_eq!(
            app.admin(Method::GET, "/pricing", None).await.data()["my-model"],
            json!({"input": 0.3, "output": 0.6, "cached_input": 0.1})
        );
        app.stop().await;
    }
}
