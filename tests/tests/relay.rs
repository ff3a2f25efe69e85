//! End-to-end tests of the relay (SPEC §4) against the mock provider, on SQLite and (when
//! configured) MariaDB: billing of JSON and SSE calls, the error table, retries and automatic
//! disabling, client disconnects, broken upstream streams.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use reqwest::Method;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tollgate_domain::ids::{TokenId, UserId};
use tollgate_domain::ratelimit::RateLimits;
use tollgate_domain::repository::TokenRepository;
use tollgate_domain::time::UnixTime;
use tollgate_domain::token::{AccessKey, TokenRecord};
use tollgate_relay::cache::KEY_RECHECK;
use tollgate_storage::{SeaStore, testing};
use tollgate_tests::TestApp;
use tollgate_tests::cut::{CUT_PIECES, CutUpstream};
use tollgate_tests::mock::{COMPLETION_TOKENS, MockProvider, PROMPT_TOKENS, REPLY, SLOW_MS};

/// qwen-turbo at $2 / $6 per 1M: 14 + 18 tokens cost ceil((28 + 108) / 2) = 68 quota.
const CALL_QUOTA: i64 = 68;

async fn setup(app: &TestApp, mock: &MockProvider) -> i64 {
    app.price("qwen-turbo", "2.0", "6.0").await;
    app.channel(
        "openai_compatible",
        &mock.base_url,
        &[("qwen-turbo", "qwen-turbo")],
        0,
    )
    .await
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "你好！"}]})
}

/// `POST /v1/chat/completions` with `body` as given.
async fn raw(app: &TestApp, key: Option<&str>, body: &[u8]) -> tollgate_tests::Reply {
    app.send(
        Method::POST,
        "/v1/chat/completions",
        key,
        Some(body.to_vec()),
        Some("application/json"),
    )
    .await
}

/// SQLite, and MariaDB/MySQL when `TOLLGATE_TEST_MYSQL_URL` is set: fresh database URLs for
/// the tests that need the URL itself (a second process, or rows written around the API).
async fn databases() -> Vec<(String, &'static str)> {
    let mut out = vec![(testing::sqlite_url(), "sqlite")];
    if let Some(url) = testing::mysql_url().await.expect("MySQL test database") {
        out.push((url, "mysql"));
    }
    out
}

/// SPEC allows a settled call 1 s to show in stats and logs.
const SETTLE_WINDOW: Duration = Duration::from_secs(1);

fn sse_data(raw: &str) -> Vec<String> {
    raw.replace("\r\n", "\n")
        .split('\n')
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|v| v.strip_prefix(' ').unwrap_or(v).to_owned())
        .collect()
}

#[tokio::test]
async fn a_json_call_is_forwarded_untouched_and_billed_exactly() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        setup(&app, &mock).await;
        let key = app.funded_key("u1", "10").await;
        // Sent as text: a JSON value would print 2.50 as 2.5 before it left the test.
        let body = r#"{"model":"qwen-turbo","messages":[{"role":"user","content":"你好！"}],"temperature":0.7,"max_tokens":200,"x_vendor_flag":{"keep":[1,2.50]}}"#;
        let r = app
            .send(
                Method::POST,
                "/v1/chat/completions",
                Some(&key),
                Some(body.as_bytes().to_vec()),
                Some("application/json"),
            )
            .await;
        assert_eq!(r.status, 200, "{} {}", app.backend, r.body);
        assert_eq!(r.body["choices"][0]["message"]["content"], REPLY);
        assert!(r.request_id.is_some());
        let seen = mock.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].header("authorization"),
            Some("Bearer sk-upstream-secret")
        );
        assert_eq!(seen[0].body["temperature"].to_string(), "0.7");
        assert_eq!(seen[0].body["x_vendor_flag"]["keep"][1].to_string(), "2.50");
        let info = app.settled("u1", 1).await;
        assert_eq!(info["used_quota"], CALL_QUOTA);
        assert_eq!(info["current_quota"], 5_000_000 - CALL_QUOTA);
        // Less the balance lease until it comes back (a second idle).
        let info = app.no_hold_left("u1").await;
        assert_eq!(
            info["balance_capacity"].to_string(),
            format!("{}", rust_decimal_text(5_000_000 - CALL_QUOTA))
        );
        let logs = app.ext(Method::GET, "/u1/logs?type=consume", None).await;
        let row = &logs.data()["logs"][0];
        assert_eq!(row["prompt_tokens"], PROMPT_TOKENS);
        assert_eq!(row["completion_tokens"], COMPLETION_TOKENS);
        assert_eq!(row["quota"], CALL_QUOTA);
        assert_eq!(row["request_id"].as_str(), r.request_id.as_deref());
        assert_eq!(row["is_stream"], false);
        app.stop().await;
    }
}

/// Quota as USD text (500,000 per dollar), as the API prints it.
fn rust_decimal_text(quota: i64) -> String {
    let whole = quota / 500_000;
    let frac = quota % 500_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{:06}", frac * 2);
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[tokio::test]
async fn a_stream_hides_usage_unless_asked_and_is_billed() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        setup(&app, &mock).await;
        let key = app.funded_key("s1", "10").await;
        let mut body = ask("qwen-turbo");
        body["stream"] = json!(true);
        let (status, ctype, raw) = app.chat_stream(&key, &body).await;
        assert_eq!(status, 200);
        assert!(ctype.starts_with("text/event-stream"), "{ctype}");
        let events = sse_data(&raw);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).expect("chunk json"))
            .collect();
        assert!(
            chunks.iter().all(|c| c.get("usage").is_none()),
            "usage shown unasked"
        );
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, REPLY);
        assert_eq!(
            mock.requests()[0].body["stream_options"]["include_usage"],
            true
        );
        assert_eq!(app.settled("s1", 1).await["used_quota"], CALL_QUOTA);

        body["stream_options"] = json!({"include_usage": true});
        let (_, _, raw) = app.chat_stream(&key, &body).await;
        let events = sse_data(&raw);
        let usage: Value = serde_json::from_str(&events[events.len() - 2]).expect("usage chunk");
        assert_eq!(usage["usage"]["completion_tokens"], COMPLETION_TOKENS);
        let info = app.settled("s1", 2).await;
        assert_eq!(info["used_quota"], 2 * CALL_QUOTA);
        let logs = app.ext(Method::GET, "/s1/logs", None).await;
        assert_eq!(logs.data()["logs"][0]["is_stream"], true);
        app.stop().await;
    }
}

/// SPEC §4's error table, one row at a time: status, OpenAI `code` and `type`, the message,
/// and `X-Request-Id`. (Upstream failures — 502, 504 and the pass-through of upstream 4xx —
/// are in the next test.)
#[tokio::test]
async fn the_error_table_of_spec_4() {
    for (url, backend) in databases().await {
        let app = TestApp::start_with(
            url.clone(),
            backend,
            &[("TOLLGATE_RELAY_BODY_LIMIT", "4096")],
        )
        .await;
        let mock = MockProvider::start().await;
        let channel = setup(&app, &mock).await;
        app.price("deepseek-chat", "0.27", "1.1").await;
        let key = app.funded_key("e1", "10").await;
        let check =
            |r: &tollgate_tests::Reply, status: u16, code: &str, kind: &str, message: &str| {
                assert_eq!(r.status.as_u16(), status, "{backend} {code}: {}", r.body);
                assert_eq!(r.body["error"]["code"], code, "{}", r.body);
                assert_eq!(r.body["error"]["type"], kind, "{}", r.body);
                assert_eq!(r.body["error"]["message"], message, "{}", r.body);
                assert!(r.request_id.is_some(), "{code}: no X-Request-Id");
            };
        let invalid_key = |r: &tollgate_tests::Reply| {
            check(
                r,
                401,
                "invalid_api_key",
                "authentication_error",
                "无效的令牌",
            );
        };

        // 401: no key, a key of the wrong shape, a well-formed key nobody issued.
        invalid_key(&raw(&app, None, b"{}").await);
        invalid_key(&app.chat("sk-invalid-token", &ask("qwen-turbo")).await);
        invalid_key(
            &app.chat(&format!("sk-{}", "a".repeat(48)), &ask("qwen-turbo"))
                .await,
        );

        // 401 token_expired: a key whose expiry has passed (written around the API, which only
        // issues keys valid for at least a day).
        let user = app
            .ext(
                Method::POST,
                "/sync",
                Some(json!({"external_user_id": "e-old", "username": "u"})),
            )
            .await;
        let user_id = UserId::new(user.data()["user_id"].as_i64().expect("user id"));
        let old = AccessKey::generate(|buf| buf.fill(7));
        SeaStore::connect(&url)
            .await
            .expect("store")
            .insert_token(&TokenRecord {
                user_id,
                name: "old".into(),
                key_hash: old.hash(),
                hint: old.hint(),
                created_at: UnixTime::from_secs(1_700_000_000),
                expires_at: UnixTime::from_secs(1_700_086_400),
                quota_limit: None,
                limits: RateLimits::default(),
            })
            .await
            .expect("expired key");
        check(
            &app.chat(old.expose(), &ask("qwen-turbo")).await,
            401,
            "token_expired",
            "authentication_error",
            "令牌已过期",
        );

        // 401 token_disabled: a key switched off in the database (no API does it) before its
        // first call, so the relay reads the disabled row itself. (A key already in the key
        // cache when it is switched off: `a_key_disabled_after_its_first_call_is_refused`.)
        let off = app.funded_key("e-off", "10").await;
        let off_id =
            app.ext(Method::GET, "/e-off/stats", None).await.data()["tokens"][0]["token_id"]
                .as_i64()
                .expect("token id");
        let store = SeaStore::connect(&url).await.expect("store");
        assert!(
            testing::set_token_status(&store, TokenId::new(off_id), true)
                .await
                .expect("disable")
        );
        let before = mock.calls();
        check(
            &app.chat(&off, &ask("qwen-turbo")).await,
            401,
            "token_disabled",
            "authentication_error",
            "令牌已被禁用",
        );
        assert_eq!(mock.calls(), before);

        // 400: malformed JSON, missing `model` or `messages`, a field of the wrong type.
        let bad_request = |r: &tollgate_tests::Reply, message: &str| {
            check(
                r,
                400,
                "invalid_request_error",
                "invalid_request_error",
                message,
            );
        };
        let truncated = raw(
            &app,
            Some(&key),
            b"{\"model\": \"qwen-turbo\", \"messages\": [",
        )
        .await;
        // The parser's position detail follows the fixed part of this one message.
        assert!(
            truncated.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("invalid JSON body: ")),
            "{}",
            truncated.body
        );
        bad_request(
            &truncated,
            truncated.body["error"]["message"]
                .as_str()
                .unwrap_or_default(),
        );
        bad_request(
            &raw(&app, Some(&key), b"{\"messages\":[]}").await,
            "you must provide a model parameter",
        );
        bad_request(
            &raw(&app, Some(&key), b"{\"model\":\"qwen-turbo\"}").await,
            "you must provide messages",
        );
        bad_request(
            &raw(
                &app,
                Some(&key),
                b"{\"model\":\"qwen-turbo\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":\"yes\"}",
            )
            .await,
            "stream must be a boolean",
        );

        // 413 over the body limit (4096 bytes here).
        let huge = json!({"model": "qwen-turbo", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
        check(
            &app.chat(&key, &huge).await,
            413,
            "payload_too_large",
            "invalid_request_error",
            "请求体过大：最多 4096 字节",
        );

        // 404: listed by no channel — unknown, or priced but served by nobody.
        for model in ["no-such-model", "deepseek-chat"] {
            check(
                &app.chat(&key, &ask(model)).await,
                404,
                "model_not_found",
                "invalid_request_error",
                &format!("模型 {model} 不存在"),
            );
        }

        // 503: listed only by a disabled channel.
        app.admin(Method::POST, &format!("/channels/{channel}/disable"), None)
            .await
            .data();
        check(
            &app.chat(&key, &ask("qwen-turbo")).await,
            503,
            "no_available_channel",
            "server_error",
            "模型 qwen-turbo 当前没有可用的渠道",
        );
        app.admin(Method::POST, &format!("/channels/{channel}/enable"), None)
            .await
            .data();
        assert_eq!(app.chat(&key, &ask("qwen-turbo")).await.status, 200);

        // 403: a balance that cannot cover the hold, refused before any upstream call.
        let poor = app.funded_key("e-poor", "0").await;
        let before = mock.calls();
        check(
            &app.chat(&poor, &ask("qwen-turbo")).await,
            403,
            "insufficient_user_quota",
            "insufficient_quota",
            "用户额度不足",
        );
        assert_eq!(mock.calls(), before);

        // 401 again for a deleted key, at once.
        let tokens = app.ext(Method::GET, "/e1/stats", None).await.data()["tokens"].clone();
        let id = tokens[0]["token_id"].as_i64().expect("id");
        app.ext(
            Method::DELETE,
            "/token",
            Some(json!({"external_user_id": "e1", "token_id": id})),
        )
        .await
        .data();
        invalid_key(&app.chat(&key, &ask("qwen-turbo")).await);
        app.stop().await;
    }
}

/// SPEC §4: a disabled key is refused with 401 `token_disabled` also when the relay has it in
/// its key cache as enabled (it was used before it was switched off, by a write that no change
/// feed announced). With `TOLLGATE_LEDGER=exact` the hold, taken in the database before any
/// upstream call, reads the row: the very next call is refused. With balance leases (the
/// default) the hold does not read the key's row; the change feed's listener reads cached keys
/// again every `KEY_REFRESH` (500 ms), so the key is refused within `KEY_RECHECK` (1 s). Either way nothing is sent
/// upstream once it is refused, and nothing is held or charged; switched on again, it works.
#[tokio::test]
async fn a_key_disabled_after_its_first_call_is_refused() {
    for ledger in ["exact", "lease"] {
        for (url, backend) in databases().await {
            let app =
                TestApp::start_with(url.clone(), backend, &[("TOLLGATE_LEDGER", ledger)]).await;
            let mock = MockProvider::start().await;
            setup(&app, &mock).await;
            let user = format!("d1-{ledger}");
            let key = app.funded_key(&user, "10").await;
            let stats = app.ext(Method::GET, &format!("/{user}/stats"), None).await;
            let id = TokenId::new(stats.data()["tokens"][0]["token_id"].as_i64().expect("id"));
            // The first call caches the key as enabled.
            assert_eq!(app.chat(&key, &ask("qwen-turbo")).await.status, 200);
            assert_eq!(app.settled(&user, 1).await["used_quota"], CALL_QUOTA);

            let store = SeaStore::connect(&url).await.expect("store");
            assert!(
                testing::set_token_status(&store, id, true)
                    .await
                    .expect("disable")
            );
            let switched_off = Instant::now();
            let stats = app.ext(Method::GET, &format!("/{user}/stats"), None).await;
            assert_eq!(stats.data()["tokens"][0]["status"], 2, "{backend}");
            // Calls answered before the key's refusal (lease: at most one recheck's time).
            let mut answered = 1;
            loop {
                let r = app.chat(&key, &ask("qwen-turbo")).await;
                if r.status == 200 && ledger == "lease" {
                    answered += 1;
                    assert!(
                        switched_off.elapsed() < KEY_RECHECK,
                        "{backend}: still answered after {:?}",
                        switched_off.elapsed()
                    );
                    continue;
                }
                assert_eq!(r.status, 401, "{backend} {ledger}: {}", r.body);
                break;
            }
            let sent = mock.calls();
            assert_eq!(sent, answered, "{backend} {ledger}");
            for _ in 0..2 {
                let r = app.chat(&key, &ask("qwen-turbo")).await;
                assert_eq!(r.status, 401, "{backend} {ledger}: {}", r.body);
                assert_eq!(r.body["error"]["code"], "token_disabled", "{}", r.body);
                assert_eq!(r.body["error"]["type"], "authentication_error");
                assert_eq!(r.body["error"]["message"], "令牌已被禁用");
            }
            let mut body = ask("qwen-turbo");
            body["stream"] = json!(true);
            let (status, _, text) = app.chat_stream(&key, &body).await;
            assert_eq!(status, 401, "{backend}: {text}");
            assert!(text.contains("\"token_disabled\""), "{text}");
            assert_eq!(
                mock.calls(),
                sent,
                "{backend} {ledger}: nothing sent upstream"
            );
            let info = app.no_hold_left(&user).await;
            let charged = CALL_QUOTA * i64::try_from(answered).expect("count");
            assert_eq!(info["used_quota"], charged);
            assert_eq!(info["total_requests"], answered);
            assert_eq!(info["current_quota"], 5_000_000 - charged);
            assert_eq!(info["balance_capacity"], info["current_balance"]);

            assert!(
                testing::set_token_status(&store, id, false)
                    .await
                    .expect("enable")
            );
            // Seen again at the next recheck at the latest.
            let deadline = Instant::now() + KEY_RECHECK * 3;
            while app.chat(&key, &ask("qwen-turbo")).await.status != 200 {
                assert!(
                    Instant::now() < deadline,
                    "{backend} {ledger}: still refused"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            app.stop().await;
        }
    }
}

#[tokio::test]
async fn upstream_failures_map_to_502_504_and_client_errors_pass_through_scrubbed() {
    let settings = [
        ("TOLLGATE_UPSTREAM_FIRST_BYTE_TIMEOUT_SECS", "1"),
        ("TOLLGATE_CHANNEL_FAILURE_THRESHOLD", "0"),
    ];
    for app in TestApp::all_with(&settings).await {
        let mock = MockProvider::start().await;
        for m in ["m-500", "m-400", "m-slow", "m-429"] {
            app.price(m, "1", "1").await;
        }
        app.channel(
            "openai_compatible",
            &mock.base_url,
            &[
                ("m-500", "fail-500"),
                ("m-400", "fail-400"),
                ("m-slow", "slow"),
            ],
            0,
        )
        .await;
        // A channel answering 429 is rested (SPEC §4, Routing): on a channel of its own, so
        // the other rows are not skipped meanwhile.
        app.channel(
            "openai_compatible",
            &mock.base_url,
            &[("m-429", "fail-429")],
            0,
        )
        .await;
        let key = app.funded_key("f1", "10").await;

        let r = app.chat(&key, &ask("m-500")).await;
        assert_eq!(r.status, 502, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "upstream_error");
        // One channel: the default 2 retries go to it again.
        assert_eq!(mock.calls_for("fail-500"), 3);
        // An upstream 429 rests its channel (SPEC §4): not retried on it; with no other
        // channel the client is told to come back, as by its own limits.
        let r = app.chat(&key, &ask("m-429")).await;
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "channel_rate_limited");
        assert_eq!(mock.calls_for("fail-429"), 1);

        let r = app.chat(&key, &ask("m-400")).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "bad_messages");
        let text = r.body.to_string();
        assert!(
            !text.contains("sk-upstream-secret"),
            "channel key leaked: {text}"
        );
        assert_eq!(
            mock.calls_for("fail-400"),
            1,
            "client errors are not retried"
        );

        let asked = Instant::now();
        let r = app.chat(&key, &ask("m-slow")).await;
        assert_eq!(r.status, 504, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "upstream_timeout");
        assert_eq!(
            mock.calls_for("slow"),
            1,
            "first-byte timeouts are not retried"
        );
        // The gateway hung up on the slow upstream rather than waiting for its answer …
        let deadline = Instant::now() + Duration::from_secs(3);
        while mock.cancelled() < 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            mock.cancelled(),
            1,
            "{}: the slow call was dropped",
            app.backend
        );

        // … so nothing is charged, even after the moment the upstream would have answered and
        // the settlement window after it.
        let answer_due = asked + Duration::from_millis(SLOW_MS) + SETTLE_WINDOW;
        tokio::time::sleep(answer_due.saturating_duration_since(Instant::now())).await;
        let info = app.no_hold_left("f1").await;
        assert_eq!(
            (info["used_quota"].as_i64(), info["total_requests"].as_i64()),
            (Some(0), Some(0))
        );
        assert_eq!(info["balance_capacity"], 10);
        app.stop().await;
    }
}

#[tokio::test]
async fn retries_move_to_the_next_channel_and_rejected_keys_disable_a_channel() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        app.price("qwen-turbo", "2.0", "6.0").await;
        // Highest priority first: a broken channel, a channel whose key is rejected, a good one.
        let broken = app
            .channel(
                "openai_compatible",
                &mock.base_url,
                &[("qwen-turbo", "fail-500")],
                30,
            )
            .await;
        let rejected = app
            .channel("openai", &mock.base_url, &[("qwen-turbo", "fail-401")], 20)
            .await;
        let good = app
            .channel(
                "deepseek",
                &mock.base_url,
                &[("qwen-turbo", "qwen-turbo")],
                10,
            )
            .await;
        let key = app.funded_key("r1", "10").await;
        let r = app.chat(&key, &ask("qwen-turbo")).await;
        assert_eq!(r.status, 200, "{} {}", app.backend, r.body);
        assert_eq!(
            (
                mock.calls_for("fail-500"),
                mock.calls_for("fail-401"),
                mock.calls_for("qwen-turbo")
            ),
            (1, 1, 1)
        );
        let info = app.settled("r1", 1).await;
        assert_eq!(info["used_quota"], CALL_QUOTA, "charged once");
        assert_eq!(info["total_requests"], 1);
        let channels = app.admin(Method::GET, "/channels", None).await;
        let status = |id: i64| {
            channels
                .data()
                .as_array()
                .expect("list")
                .iter()
                .find(|c| c["id"] == id)
                .expect("channel")["status"]
                .clone()
        };
        assert_eq!(status(rejected), "auto_disabled");
        assert_eq!(status(broken), "enabled");
        assert_eq!(status(good), "enabled");
        assert!(!channels.body.to_string().contains("sk-upstream-secret"));
        // The disabled channel is skipped from now on.
        assert_eq!(app.chat(&key, &ask("qwen-turbo")).await.status, 200);
        assert_eq!(mock.calls_for("fail-401"), 1);
        app.stop().await;
    }
}

/// SPEC §4, Streaming: a client that disconnects cancels the upstream call and pays for the
/// prompt and the completion delivered — counted with the tokenizer, once. The upstream would
/// have reported 900 completion tokens had it run to the end; each piece it sent is one token.
#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_and_pays_for_what_was_delivered_once() {
    for app in TestApp::all().await {
        let up = CutUpstream::start().await;
        app.price("qwen-turbo", "2.0", "6.0").await;
        app.channel(
            "openai_compatible",
            &up.base_url,
            &[("qwen-turbo", "cut")],
            0,
        )
        .await;
        let key = app.funded_key("d1", "10").await;
        let body = json!({"model": "qwen-turbo", "stream": true, "max_tokens": 1000,
                          "messages": [{"role": "user", "content": "hello world"}]});
        let mut res = app.chat_request(&key, &body).send().await.expect("sent");
        let mut got = String::new();
        while got.matches("data:").count() < 5 {
            let chunk = res.chunk().await.expect("chunk").expect("more");
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
        let seen = got.matches("data:").count();
        drop(res);
        assert_eq!(
            up.hung_up_reaches(1).await,
            1,
            "{}: upstream cancelled",
            app.backend
        );
        let cancelled_at = Instant::now();
        let written = up.written.load(Ordering::SeqCst);
        assert!(
            written < CUT_PIECES,
            "the upstream stopped early: {written}"
        );
        let info = app.settled("d1", 1).await;
        assert_eq!(info["total_requests"], 1, "{}", app.backend);
        let logs = app.ext(Method::GET, "/d1/logs?type=consume", None).await;
        let rows = logs.data()["logs"].as_array().expect("rows").clone();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let row = &rows[0];
        // The prompt by OpenAI's accounting with cl100k_base: 3 + 3 per message + "user" (1)
        // + "hello world" (2) = 9.
        assert_eq!(row["prompt_tokens"], 9, "{row}");
        // What was delivered: at least what the client read, at most what the upstream wrote.
        let delivered = row["completion_tokens"].as_u64().expect("tokens");
        assert!(
            (seen as u64..=written as u64).contains(&delivered),
            "{}: billed {delivered} tokens; the client read {seen}, the upstream wrote {written}",
            app.backend
        );
        // $2 / $6 per 1M: ceil((9 × 2 + n × 6) / 2) = 9 + 3n.
        let quota = row["quota"].as_i64().expect("quota");
        assert_eq!(quota, 9 + 3 * i64::try_from(delivered).expect("n"), "{row}");
        // Nothing more arrives once the settlement window has passed: settled once, no hold.
        tokio::time::sleep(SETTLE_WINDOW.saturating_sub(cancelled_at.elapsed())).await;
        let again = app.no_hold_left("d1").await;
        assert_eq!(again["total_requests"], 1);
        assert_eq!(again["used_quota"], quota);
        assert_eq!(again["current_quota"].as_i64(), Some(5_000_000 - quota));
        assert_eq!(again["balance_capacity"], again["current_balance"]);
        assert_eq!(up.finished.load(Ordering::SeqCst), 0);
        app.stop().await;
    }
}

#[tokio::test]
async fn broken_upstream_streams_end_cleanly_and_are_counted_with_the_tokenizer() {
    for app in TestApp::all_with(&[("TOLLGATE_UPSTREAM_IDLE_TIMEOUT_SECS", "1")]).await {
        let mock = MockProvider::start().await;
        app.price("qwen-turbo", "2.0", "6.0").await;
        app.price("qwen-plus", "2.0", "6.0").await;
        app.price("qwen-max", "2.0", "6.0").await;
        app.channel(
            "openai_compatible",
            &mock.base_url,
            &[
                ("qwen-turbo", "close"),
                ("qwen-plus", "stall"),
                ("qwen-max", "nousage"),
            ],
            0,
        )
        .await;
        let key = app.funded_key("b1", "10").await;
        for (n, model) in ["qwen-turbo", "qwen-plus", "qwen-max"]
            .into_iter()
            .enumerate()
        {
            let mut body = ask(model);
            body["stream"] = json!(true);
            let (status, _, raw) = app.chat_stream(&key, &body).await;
            assert_eq!(status, 200);
            let events = sse_data(&raw);
            assert_eq!(
                events.last().map(String::as_str),
                Some("[DONE]"),
                "{model}: {raw}"
            );
            let info = app.settled("b1", i64::try_from(n).expect("n") + 1).await;
            assert_eq!(
                info["total_requests"],
                i64::try_from(n).expect("n") + 1,
                "{model}"
            );
        }
        let logs = app.ext(Method::GET, "/b1/logs?type=consume", None).await;
        let rows = logs.data()["logs"].as_array().expect("rows").clone();
        // Newest first. None of these upstreams reported usage, so every count is cl100k_base's:
        // the prompt is 3 + 3 per message + "user" (1) + "你好！" (3) = 10; `close` and `stall`
        // delivered two pieces, "你好！很高兴" + "见到你！今天" (14 tokens), `nousage` the whole
        // reply (34 tokens).
        let billed: Vec<(String, Value, Value, Value)> = rows
            .iter()
            .map(|r| {
                (
                    r["model"].as_str().expect("model").to_owned(),
                    r["prompt_tokens"].clone(),
                    r["completion_tokens"].clone(),
                    r["quota"].clone(),
                )
            })
            .collect();
        // $2 / $6 per 1M: ceil((10 × 2 + n × 6) / 2) = 10 + 3n.
        assert_eq!(
            billed,
            [
                ("qwen-max".to_owned(), json!(10), json!(34), json!(112)),
                ("qwen-plus".to_owned(), json!(10), json!(14), json!(52)),
                ("qwen-turbo".to_owned(), json!(10), json!(14), json!(52)),
            ],
            "{}",
            app.backend
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn stats_show_capacity_and_models_list_what_is_served() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        setup(&app, &mock).await;
        let key = app.funded_key("c1", "0.01").await;
        let info = app.user_info("c1").await;
        // 5,000 quota buys 5,000 input tokens at $2/1M or 1,666 output tokens at $6/1M.
        assert_eq!(
            info["model_capacity"]["qwen-turbo"],
            json!({"input_tokens": 5000, "output_tokens": 1666})
        );
        assert_eq!(info["model_capacity"].as_object().expect("map").len(), 1);
        let models = app.ext(Method::GET, "/models", None).await;
        assert_eq!(
            models.data(),
            &json!([{"model": "qwen-turbo", "input": 2, "output": 6, "cached_input": 2}])
        );
        let v1 = app
            .send(Method::GET, "/v1/models", Some(&key), None, None)
            .await;
        assert_eq!(v1.status, 200);
        assert_eq!(v1.body["object"], "list");
        assert_eq!(v1.body["data"][0]["id"], "qwen-turbo");
        assert_eq!(
            app.send(Method::GET, "/v1/models", None, None, None)
                .await
                .status,
            401
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn the_echo_channel_runs_the_whole_flow_locally() {
    for app in TestApp::all().await {
        app.echo_model("qwen-turbo").await;
        let key = app.funded_key("x1", "1").await;
        let r = app.chat(&key, &ask("qwen-turbo")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body["choices"][0]["message"]["content"]
                .as_str()
                .expect("text")
                .contains("你好")
        );
        let mut body = ask("qwen-turbo");
        body["stream"] = json!(true);
        let (status, _, raw) = app.chat_stream(&key, &body).await;
        assert_eq!(status, 200);
        assert_eq!(sse_data(&raw).last().map(String::as_str), Some("[DONE]"));
        let info = app.settled("x1", 2).await;
        assert_eq!(info["total_requests"], 2);
        assert!(info["used_quota"].as_i64().expect("q") > 0);
        app.stop().await;
    }
}

/// A client that hangs up before the first byte cancels its call: the upstream request is
/// dropped (the mock sees the connection close) and the hold is released in full, since
/// nothing was delivered.
#[tokio::test]
async fn a_client_that_leaves_before_the_first_byte_cancels_the_upstream_call() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        app.mock_model(&mock, "qwen-turbo", "slow").await;
        let key = app.funded_key("gone", "1").await;
        let res = app
            .chat_request(&key, &ask("qwen-turbo"))
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        assert!(res.is_err(), "the client gave up first");
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while mock.cancelled() < 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            mock.cancelled(),
            1,
            "{}: the upstream call was cancelled",
            app.backend
        );
        assert_eq!(mock.calls(), 1);
        let info = app.no_hold_left("gone").await;
        assert_eq!(info["balance_capacity"], 1, "no hold left: {info}");
        assert_eq!(
            (info["total_requests"].clone(), info["used_quota"].clone()),
            (json!(0), json!(0))
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn unknown_relay_paths_answer_in_openai_shape() {
    for app in TestApp::all().await {
        let r = app
            .send(
                Method::POST,
                "/v1/audio/speech",
                Some("sk-x"),
                Some(b"{}".to_vec()),
                Some("application/json"),
            )
            .await;
        assert_eq!(r.status, 404, "{}", app.backend);
        assert_eq!(r.body["error"]["code"], "unknown_url");
        assert!(r.request_id.is_some());
        app.stop().await;
    }
}

/// SIGTERM-style graceful stop: a stream in flight runs to its end and is settled before the
/// process would exit.
#[tokio::test]
async fn a_graceful_stop_finishes_and_settles_streams_in_flight() {
    for (url, backend) in databases().await {
        let app = TestApp::start(url.clone(), backend).await;
        let mock = MockProvider::start().await;
        app.mock_model(&mock, "qwen-turbo", "long").await;
        let key = app.funded_key("late", "1").await;
        let mut body = ask("qwen-turbo");
        body["stream"] = json!(true);
        let client = app.client.clone();
        let target = format!("{}/v1/chat/completions", app.base);
        let reader = tokio::spawn(async move {
            let res = client
                .post(target)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .expect("sent");
            res.text().await.expect("whole stream")
        });
        // Stop only once the stream is under way (the upstream has the call).
        let deadline = Instant::now() + Duration::from_secs(5);
        while mock.calls() == 0 {
            assert!(Instant::now() < deadline, "the stream never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        app.stop().await;
        let raw = reader.await.expect("join");
        assert_eq!(
            sse_data(&raw).last().map(String::as_str),
            Some("[DONE]"),
            "{backend}: {raw}"
        );
        assert_eq!(
            sse_data(&raw).len(),
            40 + 2,
            "every chunk, the stop chunk and [DONE]"
        );
        // A new process on the same database sees the settlement: the mock's usage, 14 + 18
        // tokens.
        let again = TestApp::start(url, backend).await;
        let info = again.settled("late", 1).await;
        assert_eq!(info["total_requests"], 1, "{backend}");
        assert_eq!(info["used_quota"], CALL_QUOTA);
        assert_eq!(info["balance_capacity"], info["current_balance"]);
        again.stop().await;
    }
}

#[tokio::test]
async fn provider_keys_in_the_environment_create_their_channels_once() {
    for (url, backend) in databases().await {
        // Two starts on one database: the second finds the channels there and adds none.
        for _ in 0..2 {
            let app = TestApp::start_with(
                url.clone(),
                backend,
                &[
                    ("TOLLGATE_DEEPSEEK_API_KEY", "sk-deepseek-from-env"),
                    ("TOLLGATE_ANTHROPIC_API_KEY", "sk-ant-from-env"),
                    ("TOLLGATE_GEMINI_API_KEY", "gemini-from-env"),
                ],
            )
            .await;
            let list = app.admin(Method::GET, "/channels", None).await;
            let mut channels = list.data().as_array().expect("list").clone();
            channels.sort_by_key(|c| c["type"].as_str().unwrap_or_default().to_owned());
            let summary: Vec<(Value, Value, Value)> = channels
                .iter()
                .map(|c| {
                    (
                        c["type"].clone(),
                        c["base_url"].clone(),
                        c["models"].clone(),
                    )
                })
                .collect();
            assert_eq!(
                summary,
                [
                    (
                        json!("anthropic"),
                        json!("https://api.anthropic.com/v1"),
                        json!(["claude-sonnet-4-5", "claude-haiku-4-5"])
                    ),
                    (
                        json!("deepseek"),
                        json!("https://api.deepseek.com/v1"),
                        json!(["deepseek-chat", "deepseek-reasoner"])
                    ),
                    (
                        json!("gemini"),
                        json!("https://generativelanguage.googleapis.com/v1beta/openai"),
                        json!(["gemini-2.5-flash"])
                    ),
                ]
            );
            let text = list.body.to_string();
            for secret in ["sk-deepseek-from-env", "sk-ant-from-env", "gemini-from-env"] {
                assert!(!text.contains(secret), "{secret} leaked");
            }
            app.stop().await;
        }
    }
}

#[tokio::test]
async fn repricing_applies_from_the_next_request() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        setup(&app, &mock).await;
        let key = app.funded_key("p1", "10").await;
        assert_eq!(app.chat(&key, &ask("qwen-turbo")).await.status, 200);
        assert_eq!(app.settled("p1", 1).await["used_quota"], CALL_QUOTA);
        // Ten times the price: 14 × 20 + 18 × 60 = 1360 → 680 quota.
        app.price("qwen-turbo", "20", "60").await;
        assert_eq!(app.chat(&key, &ask("qwen-turbo")).await.status, 200);
        assert_eq!(
            app.settled("p1", 2).await["used_quota"],
            CALL_QUOTA + 680,
            "{}",
            app.backend
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn failing_channels_are_disabled_and_the_probe_brings_them_back() {
    let settings = [
        ("TOLLGATE_CHANNEL_FAILURE_THRESHOLD", "2"),
        ("TOLLGATE_CHANNEL_PROBE_SECS", "1"),
    ];
    for app in TestApp::all_with(&settings).await {
        let mock = MockProvider::start().await;
        app.price("qwen-turbo", "2.0", "6.0").await;
        let id = app
            .channel(
                "openai_compatible",
                &mock.base_url,
                &[("qwen-turbo", "fail-500")],
                0,
            )
            .await;
        let key = app.funded_key("pr1", "1").await;
        // Three attempts on the one channel count as one failed request.
        assert_eq!(app.chat(&key, &ask("qwen-turbo")).await.status, 502);
        let shown = app
            .admin(Method::GET, &format!("/channels/{id}"), None)
            .await;
        assert_eq!(shown.data()["status"], "enabled", "{}", app.backend);
        assert_eq!(app.chat(&key, &ask("qwen-turbo")).await.status, 502);
        let shown = app
            .admin(Method::GET, &format!("/channels/{id}"), None)
            .await;
        assert_eq!(shown.data()["status"], "auto_disabled", "{}", app.backend);
        assert!(
            shown.data()["disabled_reason"]
                .as_str()
                .expect("reason")
                .contains("consecutive failed requests")
        );
        let r = app.chat(&key, &ask("qwen-turbo")).await;
        assert_eq!(r.body["error"]["code"], "no_available_channel");
        // The upstream recovers (here: the channel is pointed at a healthy model); the probe
        // finds out and enables it again.
        app.admin(
            Method::PUT,
            &format!("/channels/{id}"),
            Some(json!({"model_mapping": {}})),
        )
        .await
        .data();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let c = app
                .admin(Method::GET, &format!("/channels/{id}"), None)
                .await;
            if c.data()["status"] == "enabled" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "probe did not revive: {}",
                c.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The revival reaches the relay's catalog through the change feed right after the
        // database (a few milliseconds later at most).
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while app.chat(&key, &ask("qwen-turbo")).await.status != 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "revived channel not used"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // An admin's "disabled" is never undone by the probe.
        app.admin(Method::POST, &format!("/channels/{id}/disable"), None)
            .await
            .data();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let c = app
            .admin(Method::GET, &format!("/channels/{id}"), None)
            .await;
        assert_eq!(c.data()["status"], "disabled");
        app.stop().await;
    }
}

/// With `TOLLGATE_SETTLEMENT_WINDOW_MS=0` a JSON answer goes out only once its settlement is
/// committed; with a window it never waits for the database. The test holds SQLite's write
/// lock from another connection while the upstream (`slow`) is still answering, and sees
/// whether the answer arrives before or after it lets go. SQLite only: its one write lock is
/// what the test can hold from outside (MariaDB's row locks would need the user's row).
#[tokio::test]
async fn a_json_answer_waits_for_its_settlement_only_with_a_window_of_zero() {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    for (window, durable) in [("0", true), ("2", false)] {
        let app = TestApp::start_with(
            testing::sqlite_url(),
            "sqlite",
            &[("TOLLGATE_SETTLEMENT_WINDOW_MS", window)],
        )
        .await;
        let mock = MockProvider::start().await;
        app.mock_model(&mock, "m-slow", "slow").await;
        let key = app.funded_key("durable", "1").await;
        let call = {
            let request = app.chat_request(&key, &ask("m-slow"));
            tokio::spawn(async move {
                let res = request.send().await.expect("answered");
                let status = res.status();
                res.bytes().await.expect("body");
                status
            })
        };
        // The hold is written at once; the answer comes SLOW_MS later.
        let mut deadline = Instant::now() + Duration::from_secs(5);
        while mock.calls() == 0 {
            assert!(Instant::now() < deadline, "the call reached the upstream");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let db = Database::connect(&app.database_url).await.expect("connect");
        let txn = db.begin().await.expect("begin");
        // A write takes SQLite's write lock until the transaction ends.
        txn.execute_unprepared("UPDATE users SET updated_at = updated_at WHERE id = -1")
            .await
            .expect("write lock");
        let released = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&released);
        let answered = tokio::spawn(async move {
            let status = call.await.expect("call task");
            (status, seen.load(Ordering::SeqCst))
        });
        // Past the upstream's answer, and a margin for the relay.
        deadline = Instant::now() + Duration::from_millis(SLOW_MS) + Duration::from_secs(1);
        while !answered.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        released.store(true, Ordering::SeqCst);
        txn.commit().await.expect("let go");
        let (status, after_release) = answered.await.expect("answer");
        assert_eq!(status, 200);
        assert_eq!(
            after_release,
            durable,
            "window {window}: the answer came {} the database was free again",
            if after_release { "after" } else { "before" }
        );
        let info = app.settled("durable", 1).await;
        assert_eq!(info["total_requests"], 1);
        app.stop().await;
    }
}
