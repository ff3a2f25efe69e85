//! End-to-end tests of the relay (SPEC §4) against the mock provider, on SQLite and (when
//! configured) MariaDB: billing of JSON and SSE calls, the error table, retries and automatic
//! disabling, client disconnects, broken upstream streams.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use tollgate_tests::TestApp;
use tollgate_tests::mock::{COMPLETION_TOKENS, MockProvider, PROMPT_TOKENS, REPLY};

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

#[tokio::test]
async fn the_error_table_of_spec_4() {
    for app in TestApp::all_with(&[("TOLLGATE_RELAY_BODY_LIMIT", "4096")]).await {
        let mock = MockProvider::start().await;
        let channel = setup(&app, &mock).await;
        app.price("deepseek-chat", "0.27", "1.1").await;
        let key = app.funded_key("e1", "10").await;
        let assert_openai = |r: &tollgate_tests::Reply, status: u16, code: &str| {
            assert_eq!(r.status.as_u16(), status, "{} {}", app.backend, r.body);
            assert_eq!(r.body["error"]["code"], code, "{}", r.body);
            assert!(
                r.body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
            assert!(r.body["error"]["type"].is_string());
            assert!(r.request_id.is_some());
        };
        let no_key = app
            .send(
                Method::POST,
                "/v1/chat/completions",
                None,
                Some(b"{}".to_vec()),
                Some("application/json"),
            )
            .await;
        assert_openai(&no_key, 401, "invalid_api_key");
        assert_eq!(no_key.body["error"]["message"], "无效的令牌");
        assert_openai(
            &app.chat("sk-invalid-token", &ask("qwen-turbo")).await,
            401,
            "invalid_api_key",
        );
        let unknown = format!("sk-{}", "a".repeat(48));
        assert_openai(
            &app.chat(&unknown, &ask("qwen-turbo")).await,
            401,
            "invalid_api_key",
        );

        for bad in [&b"{\"model\": \"qwen-turbo\", \"messages\": ["[..], b"{\"messages\":[]}", b"{\"model\":\"qwen-turbo\"}", b"{\"model\":\"qwen-turbo\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":\"yes\"}"] {
            let r = app
                .send(Method::POST, "/v1/chat/completions", Some(&key), Some(bad.to_vec()), Some("application/json"))
                .await;
            assert_openai(&r, 400, "invalid_request_error");
        }
        let huge = json!({"model": "qwen-turbo", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
        assert_openai(&app.chat(&key, &huge).await, 413, "payload_too_large");
        assert_openai(
            &app.chat(&key, &ask("no-such-model")).await,
            404,
            "model_not_found",
        );
        // Priced but served by nobody is also unknown to clients.
        assert_openai(
            &app.chat(&key, &ask("deepseek-chat")).await,
            404,
            "model_not_found",
        );

        app.admin(Method::POST, &format!("/channels/{channel}/disable"), None)
            .await
            .data();
        assert_openai(
            &app.chat(&key, &ask("qwen-turbo")).await,
            503,
            "no_available_channel",
        );
        app.admin(Method::POST, &format!("/channels/{channel}/enable"), None)
            .await
            .data();
        assert_eq!(app.chat(&key, &ask("qwen-turbo")).await.status, 200);

        // A poor user: refused before any upstream call.
        let poor = app.funded_key("e-poor", "0").await;
        let before = mock.calls();
        assert_openai(
            &app.chat(&poor, &ask("qwen-turbo")).await,
            403,
            "insufficient_user_quota",
        );
        assert_eq!(mock.calls(), before);

        // A deleted key stops at once.
        let tokens = app.ext(Method::GET, "/e1/stats", None).await.data()["tokens"].clone();
        let id = tokens[0]["token_id"].as_i64().expect("id");
        app.ext(
            Method::DELETE,
            "/token",
            Some(json!({"external_user_id": "e1", "token_id": id})),
        )
        .await
        .data();
        assert_openai(
            &app.chat(&key, &ask("qwen-turbo")).await,
            401,
            "invalid_api_key",
        );
        app.stop().await;
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
                ("m-429", "fail-429"),
            ],
            0,
        )
        .await;
        let key = app.funded_key("f1", "10").await;

        let r = app.chat(&key, &ask("m-500")).await;
        assert_eq!(r.status, 502, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "upstream_error");
        // One channel: the default 2 retries go to it again.
        assert_eq!(mock.calls_for("fail-500"), 3);
        let r = app.chat(&key, &ask("m-429")).await;
        assert_eq!(r.status, 502);
        assert_eq!(mock.calls_for("fail-429"), 3);

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

        let r = app.chat(&key, &ask("m-slow")).await;
        assert_eq!(r.status, 504, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "upstream_timeout");

        // None of these reached the user's balance; every hold was released.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let info = app.user_info("f1").await;
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

#[tokio::test]
async fn a_client_that_disconnects_pays_for_what_was_delivered_once() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        app.mock_model(&mock, "qwen-turbo", "long").await;
        let key = app.funded_key("d1", "10").await;
        let mut body = ask("qwen-turbo");
        body["stream"] = json!(true);
        let mut res = app.chat_request(&key, &body).send().await.expect("sent");
        let mut got = String::new();
        while got.matches("data:").count() < 5 {
            let chunk = res.chunk().await.expect("chunk").expect("more");
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
        drop(res);
        let info = app.settled("d1", 1).await;
        assert_eq!(info["total_requests"], 1, "{}", app.backend);
        let logs = app.ext(Method::GET, "/d1/logs?type=consume", None).await;
        let row = logs.data()["logs"][0].clone();
        let completion = row["completion_tokens"].as_i64().expect("tokens");
        assert!(
            completion > 0,
            "content was delivered: never billed at zero ({row})"
        );
        assert!(
            completion < 40 * 3,
            "billed only what was delivered ({row})"
        );
        assert!(row["quota"].as_i64().expect("quota") > 0);
        // The hold is gone and nothing is settled twice.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = app.user_info("d1").await;
        assert_eq!(again["total_requests"], 1);
        assert_eq!(
            again["current_quota"].as_i64(),
            Some(5_000_000 - row["quota"].as_i64().expect("q"))
        );
        assert_eq!(again["balance_capacity"], again["current_balance"]);
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
        for row in logs.data()["logs"].as_array().expect("rows") {
            assert!(row["completion_tokens"].as_i64().expect("n") > 0, "{row}");
            assert!(row["prompt_tokens"].as_i64().expect("n") > 0, "{row}");
        }
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
    let app = TestApp::start(tollgate_storage::testing::sqlite_url(), "sqlite").await;
    let r = app
        .send(
            Method::POST,
            "/v1/audio/speech",
            Some("sk-x"),
            Some(b"{}".to_vec()),
            Some("application/json"),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "unknown_url");
    assert!(r.request_id.is_some());
    app.stop().await;
}

/// SIGTERM-style graceful stop: a stream in flight runs to its end and is settled before the
/// process would exit.
#[tokio::test]
async fn a_graceful_stop_finishes_and_settles_streams_in_flight() {
    let url = tollgate_storage::testing::sqlite_url();
    let app = TestApp::start(url.clone(), "sqlite").await;
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
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while mock.calls() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.stop().await;
    let raw = reader.await.expect("join");
    assert_eq!(
        sse_data(&raw).last().map(String::as_str),
        Some("[DONE]"),
        "{raw}"
    );
    assert_eq!(
        sse_data(&raw).len(),
        40 + 2,
        "every chunk, the stop chunk and [DONE]"
    );
    // A new process on the same database sees the settlement.
    let again = TestApp::start(url, "sqlite").await;
    let info = again.settled("late", 1).await;
    assert_eq!(info["total_requests"], 1);
    assert_eq!(info["balance_capacity"], info["current_balance"]);
    again.stop().await;
}

#[tokio::test]
async fn provider_keys_in_the_environment_create_their_channels_once() {
    let url = tollgate_storage::testing::sqlite_url();
    for _ in 0..2 {
        let app = TestApp::start_with(
            url.clone(),
            "sqlite",
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
        assert_eq!(app.chat(&key, &ask("qwen-turbo")).await.status, 200);
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
