//! The external user API end to end: the real server on a random port, a fresh database per
//! backend, requests as a platform sends them.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_tests::{PLATFORM_A, PLATFORM_B, TestApp};

async fn sync(app: &TestApp, id: &str) -> Value {
    app.ext(
        Method::POST,
        "/sync",
        Some(json!({"external_user_id": id, "username": "user"})),
    )
    .await
    .data()
    .clone()
}

async fn top_up(app: &TestApp, id: &str, amount: Value, payment: &str) -> tollgate_tests::Reply {
    app.ext(
        Method::POST,
        "/topup",
        Some(json!({"external_user_id": id, "amount_usd": amount, "payment_id": payment})),
    )
    .await
}

/// The Go validator's message for one failing field (SPEC §3, Validation messages).
fn go(struct_name: &str, field: &str, tag: &str) -> String {
    format!(
        "请求参数错误: Key: '{struct_name}.{field}' Error:Field validation for '{field}' failed on the '{tag}' tag"
    )
}

async fn quota(app: &TestApp, id: &str) -> i64 {
    app.ext(Method::GET, &format!("/{id}/stats"), None)
        .await
        .data()["user_info"]["current_quota"]
        .as_i64()
        .expect("quota")
}

#[tokio::test]
async fn a_user_is_synced_topped_up_and_issued_a_masked_key() {
    for app in TestApp::all().await {
        let created = app
            .ext(
                Method::POST,
                "/sync",
                Some(json!({"external_user_id": "life", "username": "user"})),
            )
            .await;
        assert_eq!(created.body["message"], "用户创建成功");
        assert_eq!(created.data()["is_new_user"], true);
        assert_eq!(created.data()["quota"], 0);
        let updated = app
            .ext(
                Method::POST,
                "/sync",
                Some(json!({"external_user_id": "life", "username": "renamed"})),
            )
            .await;
        assert_eq!(updated.body["message"], "用户信息更新成功");
        assert_eq!(updated.data()["is_new_user"], false);
        assert_eq!(updated.data()["username"], "renamed");
        assert_eq!(updated.data()["user_id"], created.data()["user_id"]);
        let t = top_up(&app, "life", json!(25.50), "pay-1").await;
        assert_eq!(t.body["message"], "充值成功");
        let d = t.data();
        assert_eq!(
            (d["quota_added"].as_i64(), d["current_quota"].as_i64()),
            (Some(12_750_000), Some(12_750_000))
        );
        assert_eq!(d["current_balance"].to_string(), "25.5");
        assert_eq!(d["amount_usd"].to_string(), "25.5");
        assert_eq!(d["payment_id"], "pay-1");
        assert_eq!(d["external_user_id"], "life");
        let first = d.clone();
        let issued = app
            .ext(
                Method::POST,
                "/token",
                Some(json!({"external_user_id": "life", "token_name": "k", "quota_limit_usd": 1})),
            )
            .await;
        assert_eq!(issued.body["message"], "Token创建成功");
        let key = issued.data()["access_key"]
            .as_str()
            .expect("key")
            .to_owned();
        assert_eq!(
            issued.data()["remain_quota"],
            500_000,
            "a cap limits what the key can spend"
        );
        let stats = app.ext(Method::GET, "/life/stats", None).await;
        let s = stats.data();
        assert_eq!(s["user_info"]["current_balance"].to_string(), "25.5");
        assert_eq!(
            s["tokens"][0]["access_key"],
            format!("sk-{}...{}", &key[3..7], &key[47..])
        );
        assert!(
            !stats.body.to_string().contains(&key[7..47]),
            "the key never appears again"
        );
        assert_eq!(s["recent_logs"], json!([]));
        assert_eq!(s["model_usage"], json!({}));
        // Another credit first, so the replay below must answer the first answer's data,
        // `current_quota` included, not today's balance.
        top_up(&app, "life", json!(1), "pay-2").await.data();
        let replay = top_up(&app, "life", json!(25.5), "pay-1").await;
        let mut original = first.clone();
        original["idempotent_replay"] = json!(true);
        assert_eq!(replay.data(), &original, "{}", app.backend);
        for (user, amount) in [("life", json!(25.49)), ("other", json!(25.5))] {
            if user == "other" {
                sync(&app, "other").await;
            }
            let conflict = top_up(&app, user, amount, "pay-1").await;
            conflict.assert_error(409, "payment_id_conflict");
            assert_eq!(conflict.body["message"], "该支付ID已处理，请勿重复提交");
        }
        assert_eq!(
            quota(&app, "life").await,
            12_750_000 + 500_000,
            "replays and conflicts credit nothing on {}",
            app.backend
        );
        assert_eq!(quota(&app, "other").await, 0);
        app.stop().await;
    }
}

#[tokio::test]
async fn platforms_never_see_each_others_users() {
    for app in TestApp::all().await {
        sync(&app, "shared-id").await;
        top_up(&app, "shared-id", json!(1), "p").await.data();
        let other = app
            .ext_as(PLATFORM_B, Method::GET, "/shared-id/stats", None)
            .await;
        other.assert_error(404, "user_not_found");
        assert_eq!(other.body["message"], "用户不存在");
        let b = app
            .ext_as(
                PLATFORM_B,
                Method::POST,
                "/sync",
                Some(json!({"external_user_id": "shared-id", "username": "b"})),
            )
            .await;
        assert_eq!(b.data()["is_new_user"], true);
        assert_eq!(b.data()["quota"], 0);
        let b_top = app
            .ext_as(
                PLATFORM_B,
                Method::POST,
                "/topup",
                Some(json!({"external_user_id": "shared-id", "amount_usd": 2, "payment_id": "p"})),
            )
            .await;
        assert_eq!(
            b_top.data()["idempotent_replay"],
            false,
            "payment ids are per platform"
        );
        assert_eq!(quota(&app, "shared-id").await, 500_000);
        app.stop().await;
    }
}

#[tokio::test]
async fn the_platform_key_is_required_everywhere() {
    for app in TestApp::all().await {
        let paths = [
            (Method::POST, "/api/user/external/sync"),
            (Method::POST, "/api/user/external/topup"),
            (Method::POST, "/api/user/external/token"),
            (Method::DELETE, "/api/user/external/token"),
            (Method::GET, "/api/user/external/u/stats"),
            (Method::GET, "/api/user/external/u/logs"),
            (Method::GET, "/api/user/external/models"),
        ];
        for (method, path) in paths {
            for key in [
                None,
                Some("wrong-key"),
                Some(""),
                Some("PLATFORM-SECRET-A"),
                Some("platform-secret-a2"),
                Some("platform-secret-"),
            ] {
                let body = Some(b"{}".to_vec());
                let r = app
                    .send(method.clone(), path, key, body, Some("application/json"))
                    .await;
                r.assert_error(401, "unauthorized");
                assert_eq!(r.body["message"], "未授权：缺少或无效的平台密钥");
            }
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn bad_input_is_a_clear_400_and_changes_nothing() {
    for app in TestApp::all().await {
        sync(&app, "victim").await;
        top_up(&app, "victim", json!(1), "first").await.data();
        // Body and type errors: SPEC fixes the status, code and prefix. Field rules: SPEC fixes
        // the whole message (the field, its tag).
        let field = |f: &str, tag: &str| Some(go("ExternalUserTopUpRequest", f, tag));
        let raw_bodies: Vec<(&str, Vec<u8>, Option<String>)> = vec![
            ("malformed JSON", br#"{"external_user_id": "victim", "amount_usd": 5, "payment_id": "#.to_vec(), None),
            ("an array", br#"[1, 2]"#.to_vec(), None),
            ("empty body", Vec::new(), None),
            ("NaN", br#"{"external_user_id": "victim", "amount_usd": NaN, "payment_id": "x1"}"#.to_vec(), None),
            ("Infinity", br#"{"external_user_id": "victim", "amount_usd": Infinity, "payment_id": "x2"}"#.to_vec(), None),
            ("amount as string", br#"{"external_user_id": "victim", "amount_usd": "5", "payment_id": "x3"}"#.to_vec(), None),
            ("id as number", br#"{"external_user_id": 42, "amount_usd": 5, "payment_id": "x4"}"#.to_vec(), None),
            ("unknown field", br#"{"external_user_id": "victim", "amount_usd": 5, "payment_id": "x5", "bonus": 1}"#.to_vec(), None),
            ("huge number", br#"{"external_user_id": "victim", "amount_usd": 1e400, "payment_id": "x6"}"#.to_vec(), field("AmountUSD", "max")),
            ("tiny number", br#"{"external_user_id": "victim", "amount_usd": 1e-400, "payment_id": "x7"}"#.to_vec(), field("AmountUSD", "min")),
            ("too many digits", br#"{"external_user_id": "victim", "amount_usd": 123456789012345678901234567890, "payment_id": "x8"}"#.to_vec(), field("AmountUSD", "max")),
            ("over max", br#"{"external_user_id": "victim", "amount_usd": 100000.01, "payment_id": "x9"}"#.to_vec(), field("AmountUSD", "max")),
            ("zero", br#"{"external_user_id": "victim", "amount_usd": 0, "payment_id": "x10"}"#.to_vec(), field("AmountUSD", "required")),
            ("negative", br#"{"external_user_id": "victim", "amount_usd": -5, "payment_id": "x14"}"#.to_vec(), field("AmountUSD", "min")),
            ("below min", br#"{"external_user_id": "victim", "amount_usd": 0.009, "payment_id": "x15"}"#.to_vec(), field("AmountUSD", "min")),
            ("no payment id", br#"{"external_user_id": "victim", "amount_usd": 5}"#.to_vec(), field("PaymentId", "required")),
            ("over-long payment id", format!(r#"{{"external_user_id": "victim", "amount_usd": 5, "payment_id": "{}"}}"#, "p".repeat(201)).into_bytes(), field("PaymentId", "max")),
            ("over-long user id", format!(r#"{{"external_user_id": "{}", "amount_usd": 5, "payment_id": "x11"}}"#, "字".repeat(101)).into_bytes(), field("ExternalUserId", "max")),
            ("duplicate key", br#"{"external_user_id": "victim", "external_user_id": "victim", "amount_usd": 5, "payment_id": "x12"}"#.to_vec(), None),
            ("invalid UTF-8", b"{\"external_user_id\": \"vic\xfftim\", \"amount_usd\": 5, \"payment_id\": \"x13\"}".to_vec(), None),
        ];
        for (what, body, expected) in raw_bodies {
            let r = app
                .send(
                    Method::POST,
                    "/api/user/external/topup",
                    Some(PLATFORM_A),
                    Some(body),
                    Some("application/json"),
                )
                .await;
            r.assert_error(400, "validation_error");
            let message = r.body["message"].as_str().unwrap_or_default();
            match expected {
                Some(full) => assert_eq!(message, full, "{what}"),
                None => assert!(message.starts_with("请求参数错误: "), "{what}: {}", r.body),
            }
        }
        let good =
            br#"{"external_user_id": "victim", "amount_usd": 5, "payment_id": "ct"}"#.to_vec();
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let r = app
                .send(
                    Method::POST,
                    "/api/user/external/topup",
                    Some(PLATFORM_A),
                    Some(good.clone()),
                    ct,
                )
                .await;
            r.assert_error(400, "validation_error");
        }
        let r = app
            .send(
                Method::POST,
                "/api/user/external/sync",
                Some(PLATFORM_A),
                Some(br#"{"external_user_id": "victim", "username": 7}"#.to_vec()),
                Some("application/json"),
            )
            .await;
        r.assert_error(400, "validation_error");
        let several = app
            .ext(
                Method::POST,
                "/sync",
                Some(json!({"email": "bad", "login_type": "fax"})),
            )
            .await;
        several.assert_error(400, "validation_error");
        assert_eq!(
            several.body["message"],
            "请求参数错误: Key: 'SyncExternalUserRequest.ExternalUserId' Error:Field validation for 'ExternalUserId' failed on the 'required' tag\n\
             Key: 'SyncExternalUserRequest.Username' Error:Field validation for 'Username' failed on the 'required' tag\n\
             Key: 'SyncExternalUserRequest.Email' Error:Field validation for 'Email' failed on the 'email' tag\n\
             Key: 'SyncExternalUserRequest.LoginType' Error:Field validation for 'LoginType' failed on the 'oneof' tag"
        );
        let token = app.ext(Method::POST, "/token", Some(json!({"external_user_id": "victim", "token_name": "t", "expires_in_days": 1.5}))).await;
        token.assert_error(400, "validation_error");
        let token = app.ext(Method::POST, "/token", Some(json!({"external_user_id": "victim", "token_name": "t", "expires_in_days": 3651}))).await;
        token.assert_error(400, "validation_error");
        assert_eq!(
            token.body["message"],
            go("ExternalUserTokenRequest", "ExpiresInDays", "max")
        );
        for (body, field, tag) in [
            (
                json!({"external_user_id": "victim", "token_name": "t", "expires_in_days": -1}),
                "ExpiresInDays",
                "min",
            ),
            (
                json!({"external_user_id": "victim", "token_name": "t", "quota_limit_usd": 0.001}),
                "QuotaLimitUSD",
                "min",
            ),
            (
                json!({"external_user_id": "victim", "token_name": ""}),
                "TokenName",
                "required",
            ),
            (
                json!({"external_user_id": "victim", "token_name": "字".repeat(101)}),
                "TokenName",
                "max",
            ),
        ] {
            let r = app.ext(Method::POST, "/token", Some(body)).await;
            r.assert_error(400, "validation_error");
            assert_eq!(
                r.body["message"],
                go("ExternalUserTokenRequest", field, tag)
            );
        }
        let sync_rules = [
            (
                json!({"external_user_id": "victim", "username": "名".repeat(51)}),
                "Username",
                "max",
            ),
            (
                json!({"external_user_id": "victim", "username": "u", "display_name": "显".repeat(101)}),
                "DisplayName",
                "max",
            ),
            (
                json!({"external_user_id": "victim", "username": "u", "phone": "1".repeat(21)}),
                "Phone",
                "max",
            ),
        ];
        for (body, field, tag) in sync_rules {
            let r = app.ext(Method::POST, "/sync", Some(body)).await;
            r.assert_error(400, "validation_error");
            assert_eq!(r.body["message"], go("SyncExternalUserRequest", field, tag));
        }
        // Values that are valid but odd are just data: SQL and Unicode are stored and matched as given.
        for id in ["'; DROP TABLE users; --", "ユーザー🙂", "a%_b", "Victim"] {
            let r = top_up(&app, id, json!(5), &format!("odd-{id}")).await;
            r.assert_error(404, "user_not_found");
            assert_eq!(r.body["message"], "用户不存在");
        }
        assert_eq!(
            quota(&app, "victim").await,
            500_000,
            "nothing above changed the balance on {}",
            app.backend
        );
        let logs = app.ext(Method::GET, "/victim/logs", None).await;
        assert_eq!(
            logs.data()["pagination"]["total"],
            1,
            "and wrote no log rows"
        );
        let tokens = app.ext(Method::GET, "/victim/stats", None).await;
        assert_eq!(tokens.data()["tokens"], json!([]), "and created no token");
        app.stop().await;
    }
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    for app in TestApp::all().await {
        let body = format!(
            r#"{{"external_user_id": "x", "username": "{}"}}"#,
            "a".repeat(70 * 1024)
        )
        .into_bytes();
        let r = app
            .send(
                Method::POST,
                "/api/user/external/sync",
                Some(PLATFORM_A),
                Some(body),
                Some("application/json"),
            )
            .await;
        r.assert_error(413, "payload_too_large");
        app.stop().await;
    }
}

#[tokio::test]
async fn tokens_are_deleted_only_by_their_owner() {
    for app in TestApp::all().await {
        sync(&app, "owner").await;
        sync(&app, "stranger").await;
        let t = app
            .ext(
                Method::POST,
                "/token",
                Some(json!({"external_user_id": "owner", "token_name": "k"})),
            )
            .await;
        let id = t.data()["token_id"].as_i64().expect("id");
        let wrong = app
            .ext(
                Method::DELETE,
                "/token",
                Some(json!({"external_user_id": "stranger", "token_id": id})),
            )
            .await;
        wrong.assert_error(404, "token_not_found");
        assert_eq!(wrong.body["message"], "Token不存在或无权删除");
        let other_platform = app
            .ext_as(
                PLATFORM_B,
                Method::DELETE,
                "/token",
                Some(json!({"external_user_id": "owner", "token_id": id})),
            )
            .await;
        other_platform.assert_error(404, "token_not_found");
        assert_eq!(other_platform.body["message"], "Token不存在或无权删除");
        let missing = app
            .ext(
                Method::DELETE,
                "/token",
                Some(json!({"external_user_id": "owner"})),
            )
            .await;
        missing.assert_error(400, "validation_error");
        assert_eq!(
            missing.body["message"],
            go("DeleteExternalUserTokenRequest", "TokenId", "required")
        );
        let done = app
            .ext(
                Method::DELETE,
                "/token",
                Some(json!({"external_user_id": "owner", "token_id": id})),
            )
            .await;
        assert_eq!(
            done.data(),
            &json!({"token_id": id, "external_user_id": "owner"})
        );
        assert_eq!(done.body["message"], "Token删除成功");
        let again = app
            .ext(
                Method::DELETE,
                "/token",
                Some(json!({"external_user_id": "owner", "token_id": id})),
            )
            .await;
        again.assert_error(404, "token_not_found");
        let stats = app.ext(Method::GET, "/owner/stats", None).await;
        assert_eq!(stats.data()["tokens"], json!([]));
        app.stop().await;
    }
}

#[tokio::test]
async fn logs_paginate_newest_first_and_reject_bad_filters() {
    for app in TestApp::all().await {
        sync(&app, "reader").await;
        for (i, amount) in ["1", "2.5", "0.29"].iter().enumerate() {
            let amount: Value = serde_json::from_str(amount).expect("number");
            top_up(&app, "reader", amount, &format!("r-{i}"))
                .await
                .data();
        }
        let page = app
            .ext(Method::GET, "/reader/logs?page_size=2&type=topup", None)
            .await;
        let d = page.data();
        assert_eq!(
            d["pagination"],
            json!({"page": 1, "page_size": 2, "total": 3, "total_page": 2})
        );
        assert_eq!(d["logs"][0]["request_id"], "r-2", "newest first");
        assert_eq!(d["logs"][0]["spend"].to_string(), "0.29");
        assert_eq!(d["logs"][0]["type"], "topup");
        assert!(
            d["logs"][0]["time"].as_str().is_some_and(|t| t.len() == 19),
            "{}",
            d["logs"][0]
        );
        assert_eq!(
            d["summary"]["total_topup"].to_string(),
            "3.79",
            "summary covers every page"
        );
        assert_eq!(d["summary"]["total_spend"].to_string(), "0");
        let empty = app
            .ext(Method::GET, "/reader/logs?type=consume", None)
            .await;
        assert_eq!(empty.data()["logs"], json!([]));
        for bad in [
            "page_size=101",
            "page_size=0",
            "page=0",
            "page=-1",
            "page=abc",
            "start_date=2024-13-01",
            "end_date=invalid-date",
            "type=refund",
            "start_date=2024-02-02&end_date=2024-02-01",
            "page_size=99999999999999999999999",
        ] {
            let r = app
                .ext(Method::GET, &format!("/reader/logs?{bad}"), None)
                .await;
            r.assert_error(400, "validation_error");
        }
        let today = app
            .ext(
                Method::GET,
                "/reader/logs?start_date=2000-01-01&end_date=2999-12-31",
                None,
            )
            .await;
        assert_eq!(today.data()["pagination"]["total"], 3);
        app.ext(Method::GET, "/nobody/logs", None)
            .await
            .assert_error(404, "user_not_found");
        app.stop().await;
    }
}

#[tokio::test]
async fn concurrent_http_topups_credit_each_payment_once() {
    for app in TestApp::all().await {
        sync(&app, "crowd").await;
        let mut tasks = tokio::task::JoinSet::new();
        let app = std::sync::Arc::new(app);
        for i in 0..100 {
            let app = std::sync::Arc::clone(&app);
            tasks.spawn(async move {
                top_up(&app, "crowd", json!(0.5), &format!("crowd-{}", i % 10)).await
            });
        }
        let mut fresh = 0;
        while let Some(r) = tasks.join_next().await {
            let r = r.expect("task");
            if r.data()["idempotent_replay"] == false {
                fresh += 1;
            }
        }
        assert_eq!(fresh, 10, "on {}", app.backend);
        assert_eq!(quota(&app, "crowd").await, 10 * 250_000);
    }
}

#[tokio::test]
async fn every_response_has_a_request_id_and_health_endpoints_answer() {
    for app in TestApp::all().await {
        let health = app.send(Method::GET, "/healthz", None, None, None).await;
        assert_eq!(health.status, 200);
        assert!(health.request_id.as_ref().is_some_and(|id| id.len() == 32));
        let ready = app.send(Method::GET, "/readyz", None, None, None).await;
        assert_eq!(ready.status, 200);
        assert_eq!(ready.body["database"], app.backend);
        let unknown = app
            .send(Method::GET, "/no/such/route", None, None, None)
            .await;
        unknown.assert_error(404, "not_found");
        assert!(unknown.request_id.is_some());
        let denied = app.ext_as("nope-nope", Method::GET, "/x/stats", None).await;
        assert!(denied.request_id.is_some());
        let models = app.ext(Method::GET, "/models", None).await;
        assert_eq!(models.data(), &json!([]), "no channel exists yet");
        app.stop().await;
    }
}

#[tokio::test]
async fn sql_and_unicode_ids_are_plain_data_matched_exactly() {
    for app in TestApp::all().await {
        let ids = [
            "'; DROP TABLE users; --",
            "ユーザー🙂",
            "café",
            "cafe\u{301}",
            "a%_b",
            "A%_b",
            "tab\there",
            "trailing ",
        ];
        for (n, id) in ids.iter().enumerate() {
            let created = app
                .ext(
                    Method::POST,
                    "/sync",
                    Some(json!({"external_user_id": id, "username": "x"})),
                )
                .await;
            assert_eq!(
                created.data()["is_new_user"],
                true,
                "{id:?} on {}",
                app.backend
            );
            assert_eq!(created.data()["external_user_id"], *id);
            let amount = i64::try_from(n + 1).expect("small");
            let credited = top_up(&app, id, json!(amount), &format!("{id}-pay")).await;
            assert_eq!(credited.data()["current_quota"], amount * 500_000, "{id:?}");
            assert_eq!(credited.data()["payment_id"], format!("{id}-pay"));
        }
        let again = app
            .ext(
                Method::POST,
                "/sync",
                Some(json!({"external_user_id": "café", "username": "y"})),
            )
            .await;
        assert_eq!(again.data()["is_new_user"], false);
        assert_eq!(
            again.data()["quota"],
            3 * 500_000,
            "café and cafe\u{301} stay two users"
        );
        app.stop().await;
    }
}
