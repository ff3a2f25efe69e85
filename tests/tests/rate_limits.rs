//! Rate limits (SPEC §4.1) end to end: a key's rpm admits exactly its limit from a burst (429s
//! with `Retry-After`, free of charge, nothing sent upstream), OpenAI's `x-ratelimit-*` headers,
//! max_concurrency over streams, a channel's rpm spilling to the next channel and 429
//! `channel_rate_limited` when all are full, an upstream 429 resting a channel until a half-open
//! trial brings it back, and two instances sharing one Redis admitting together what one would.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use tollgate_storage::testing;
use tollgate_tests::TestApp;
use tollgate_tests::mock::MockProvider;

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// A funded user with a key carrying `limits` (extra fields of `POST /token`).
async fn limited_key(app: &TestApp, id: &str, limits: Value) -> String {
    app.funded_key(id, "10").await;
    let mut body = json!({"external_user_id": id, "token_name": "limited"});
    for (k, v) in limits.as_object().expect("object") {
        body[k] = v.clone();
    }
    let r = app.ext(Method::POST, "/token", Some(body)).await;
    r.data()["access_key"].as_str().expect("key").to_owned()
}

/// Sends `n` calls at once through `apps` in turn; the statuses and `Retry-After`s.
async fn burst(apps: &[&TestApp], key: &str, model: &str, n: usize) -> Vec<(u16, Option<String>)> {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let req = apps[i % apps.len()].chat_request(key, &ask(model));
            tokio::spawn(async move {
                let res = req.send().await.expect("answered");
                let retry = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                (res.status().as_u16(), retry)
            })
        })
        .collect();
    let mut out = Vec::new();
    for c in calls {
        out.push(c.await.expect("task"));
    }
    out
}

fn check_burst(label: &str, results: &[(u16, Option<String>)], admitted: usize) {
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, admitted, "{label}: {results:?}");
    for (status, retry) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 429, "{label}");
        let secs: i64 = retry
            .as_deref()
            .and_then(|r| r.parse().ok())
            .expect("Retry-After");
        assert!((1..=60).contains(&secs), "{label}: Retry-After {secs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_admits_exactly_the_keys_rpm_and_the_rest_cost_nothing() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        app.mock_model(&mock, "qwen-turbo", "qwen-turbo").await;
        let key = limited_key(&app, "rpm", json!({"rpm_limit": 20})).await;
        let results = burst(&[&app], &key, "qwen-turbo", 60).await;
        check_burst(app.backend, &results, 20);
        assert_eq!(
            mock.calls(),
            20,
            "{}: only admitted calls went upstream",
            app.backend
        );
        let info = app.settled("rpm", 20).await;
        assert_eq!(info["total_requests"], 20, "the 429s were not charged");
        let info = app.no_hold_left("rpm").await;
        assert_eq!(info["balance_capacity"], info["current_balance"]);
        // The refusal names the limit, in OpenAI's shape.
        let r = app.chat(&key, &ask("qwen-turbo")).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(r.body["error"]["type"], "rate_limit_error");
        // The key shows its limits in stats.
        let stats = app.ext(Method::GET, "/rpm/stats", None).await;
        let keys = stats.data()["tokens"].as_array().expect("tokens").clone();
        let limited = keys
            .iter()
            .find(|t| t["token_name"] == "limited")
            .expect("key");
        assert_eq!(
            (
                limited["rpm_limit"].clone(),
                limited["tpm_limit"].clone(),
                limited["max_concurrency"].clone()
            ),
            (json!(20), Value::Null, Value::Null)
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn relayed_answers_carry_openai_rate_limit_headers_and_bad_limits_are_400() {
    let app = TestApp::start(testing::sqlite_url(), "sqlite").await;
    let mock = MockProvider::start().await;
    app.mock_model(&mock, "qwen-turbo", "qwen-turbo").await;
    let key = limited_key(&app, "hdr", json!({"rpm_limit": 5, "tpm_limit": 100000})).await;
    let mut remaining = Vec::new();
    for _ in 0..2 {
        let res = app
            .chat_request(&key, &ask("qwen-turbo"))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 200);
        let h = |n: &str| {
            res.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(h("x-ratelimit-limit-requests").as_deref(), Some("5"));
        assert_eq!(h("x-ratelimit-limit-tokens").as_deref(), Some("100000"));
        assert_eq!(h("x-ratelimit-reset-requests").as_deref(), Some("60s"));
        remaining.push(h("x-ratelimit-remaining-requests").expect("remaining"));
        assert!(h("x-ratelimit-remaining-tokens").is_some());
    }
    assert_eq!(remaining, ["4", "3"]);
    // A key without limits gets no such headers.
    let free = app.funded_key("free", "1").await;
    let res = app
        .chat_request(&free, &ask("qwen-turbo"))
        .send()
        .await
        .expect("sent");
    assert!(res.headers().get("x-ratelimit-limit-requests").is_none());
    // Limits out of range: the Go validator's text, field by field.
    app.funded_key("bad", "1").await;
    for (field, value, tag, name) in [
        ("rpm_limit", json!(0), "min", "RpmLimit"),
        ("rpm_limit", json!(1_000_001), "max", "RpmLimit"),
        ("tpm_limit", json!(1_000_000_001_i64), "max", "TpmLimit"),
        ("max_concurrency", json!(10_001), "max", "MaxConcurrency"),
    ] {
        let mut body = json!({"external_user_id": "bad", "token_name": "k"});
        body[field] = value;
        let r = app.ext(Method::POST, "/token", Some(body)).await;
        r.assert_error(400, "validation_error");
        assert_eq!(
            r.body["message"],
            format!(
                "请求参数错误: Key: 'ExternalUserTokenRequest.{name}' Error:Field validation for '{name}' failed on the '{tag}' tag"
            )
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn max_concurrency_counts_streams_until_they_end() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        app.mock_model(&mock, "qwen-turbo", "stall").await;
        let key = limited_key(&app, "conc", json!({"max_concurrency": 2})).await;
        let mut body = ask("qwen-turbo");
        body["stream"] = json!(true);
        let mut open = Vec::new();
        for _ in 0..2 {
            let mut res = app.chat_request(&key, &body).send().await.expect("sent");
            assert_eq!(res.status(), 200);
            res.chunk().await.expect("chunk").expect("first");
            open.push(res);
        }
        let third = app.chat_request(&key, &body).send().await.expect("sent");
        assert_eq!(third.status(), 429, "{}", app.backend);
        assert_eq!(
            third
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        drop(open.pop());
        // The slot comes back once the dropped stream has been noticed and settled.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut fourth = app.chat_request(&key, &body).send().await.expect("sent");
            if fourth.status() == 200 {
                fourth.chunk().await.expect("chunk").expect("first");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the slot never came back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Streams that never end would hold a graceful stop for its whole grace period.
        drop(open);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_channel_at_its_rpm_spills_to_the_next_and_all_full_is_429() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        app.price("qwen-turbo", "2.0", "6.0").await;
        for (upstream, priority, rpm) in [("first", 10, 2), ("second", 0, 3)] {
            let r = app
                .admin(
                    Method::POST,
                    "/channels",
                    Some(json!({"name": upstream, "type": "openai_compatible", "base_url": mock.base_url,
                                "models": ["qwen-turbo"], "model_mapping": {"qwen-turbo": upstream},
                                "priority": priority, "rpm_limit": rpm})),
                )
                .await;
            assert_eq!(r.data()["rpm_limit"], rpm);
        }
        let key = app.funded_key("spill", "10").await;
        for _ in 0..5 {
            assert_eq!(app.chat(&key, &ask("qwen-turbo")).await.status, 200);
        }
        assert_eq!(
            (mock.calls_for("first"), mock.calls_for("second")),
            (2, 3),
            "{}",
            app.backend
        );
        let r = app.chat(&key, &ask("qwen-turbo")).await;
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "channel_rate_limited");
        assert_eq!(mock.calls(), 5);
        let info = app.settled("spill", 5).await;
        assert_eq!(info["total_requests"], 5, "the refused call cost nothing");
        app.stop().await;
    }
}

#[tokio::test]
async fn an_upstream_429_rests_the_channel_until_a_half_open_trial_brings_it_back() {
    let app = TestApp::start(testing::sqlite_url(), "sqlite").await;
    let mock = MockProvider::start().await;
    app.price("qwen-turbo", "2.0", "6.0").await;
    app.channel(
        "openai_compatible",
        &mock.base_url,
        &[("qwen-turbo", "flaky-429")],
        10,
    )
    .await;
    app.channel(
        "openai_compatible",
        &mock.base_url,
        &[("qwen-turbo", "steady")],
        0,
    )
    .await;
    let key = app.funded_key("rest", "10").await;
    // The first call meets the 429 (Retry-After: 1) and moves to the other channel.
    assert_eq!(app.chat(&key, &ask("qwen-turbo")).await.status, 200);
    assert_eq!(
        (mock.calls_for("flaky-429"), mock.calls_for("steady")),
        (1, 1)
    );
    // While it rests, calls skip it.
    assert_eq!(app.chat(&key, &ask("qwen-turbo")).await.status, 200);
    assert_eq!(
        (mock.calls_for("flaky-429"), mock.calls_for("steady")),
        (1, 2)
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // Rested: one trial call, which succeeds, and full traffic again.
    assert_eq!(app.chat(&key, &ask("qwen-turbo")).await.status, 200);
    assert_eq!(app.chat(&key, &ask("qwen-turbo")).await.status, 200);
    assert_eq!(
        (mock.calls_for("flaky-429"), mock.calls_for("steady")),
        (3, 2)
    );
    let info = app.settled("rest", 4).await;
    assert_eq!(info["total_requests"], 4);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_redis_admit_together_what_one_would() {
    let Ok(redis) = std::env::var("TOLLGATE_TEST_REDIS_URL") else {
        return; // Needs Redis: the limits are shared through it.
    };
    let url = match testing::mysql_url().await.expect("MySQL test database") {
        Some(u) => (u, "mysql"),
        None => (testing::sqlite_url(), "sqlite"),
    };
    let settings = [("TOLLGATE_REDIS_URL", redis.as_str())];
    let a = TestApp::start_with(url.0.clone(), url.1, &settings).await;
    let b = TestApp::start_with(url.0, url.1, &settings).await;
    let mock = MockProvider::start().await;
    a.mock_model(&mock, "qwen-turbo", "qwen-turbo").await;
    let key = limited_key(&a, "shared-rpm", json!({"rpm_limit": 20})).await;
    // B must know the channel before the burst. Until it does, its answer is 404 (no price
    // yet) or 503 (a price but no channel yet), neither of which counts against the limit; the
    // one call that succeeds does.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.chat(&key, &ask("qwen-turbo")).await.status != 200 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let results = burst(&[&a, &b], &key, "qwen-turbo", 60).await;
    // One call of the 20 went through B above.
    check_burst("two instances", &results, 19);
    assert_eq!(mock.calls(), 20);
    a.stop().await;
    b.stop().await;
}
