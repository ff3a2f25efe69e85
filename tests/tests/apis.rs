//! Beyond chat completions (SPEC §4.2, §4.3), end to end against the mock provider on every
//! configured database: Anthropic's Messages API natively to `anthropic` channels and converted
//! to the others (and chat completions converted to `anthropic` channels), JSON and streams,
//! each charge asserted exactly from the price table; embeddings and legacy completions; a
//! client leaving a Messages stream; the error table in Anthropic's shape; `count_tokens`.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_tests::mock::{
    CACHED_TOKENS, MockProvider, REPLY, embedding_tokens, embedding_vector,
};
use tollgate_tests::{Reply, TestApp};

/// 14 + 18 tokens at $2 / $6 per 1M: ceil((28 + 108) / 2) = 68 quota.
const CALL_QUOTA: i64 = 68;

/// Prices `model` at $2 / $6 (cached input $1) and serves it from a channel of `kind` on the
/// mock, whose upstream model is `upstream`.
async fn serve(app: &TestApp, mock: &MockProvider, kind: &str, model: &str, upstream: &str) {
    let price: Value =
        serde_json::from_str(r#"{"input":2,"output":6,"cached_input":1}"#).expect("json");
    app.admin(Method::PUT, &format!("/pricing/{model}"), Some(price))
        .await
        .data();
    app.channel(kind, &mock.base_url, &[(model, upstream)], 0)
        .await;
}

fn messages_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 200, "stream": stream, "system": "be kind",
           "messages": [{"role": "user", "content": "你好！"}]})
}

/// Sends a Messages request with `x-api-key`; status and raw body.
async fn messages(app: &TestApp, key: &str, body: &Value) -> (u16, String) {
    let res = app
        .client
        .post(format!("{}/v1/messages", app.base))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("sent");
    let status = res.status().as_u16();
    (status, res.text().await.expect("body"))
}

/// POSTs `body` as JSON to `path` with the bearer `key`.
async fn post_json(app: &TestApp, path: &str, key: &str, body: &Value) -> Reply {
    app.send(
        Method::POST,
        path,
        Some(key),
        Some(serde_json::to_vec(body).expect("json")),
        Some("application/json"),
    )
    .await
}

/// The data of every SSE event of `raw`, parsed.
fn events(raw: &str) -> Vec<Value> {
    raw.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

/// The user's last consume row once `n` calls are settled.
async fn last_charge(app: &TestApp, id: &str, n: i64) -> Value {
    let info = app.settled(id, n).await;
    assert_eq!(info["total_requests"], n, "{}: {info}", app.backend);
    let logs = app
        .ext(Method::GET, &format!("/{id}/logs?type=consume"), None)
        .await;
    logs.data()["logs"][0].clone()
}

#[tokio::test]
async fn messages_natively_and_converted_json_and_streams_billed_exactly() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        serve(&app, &mock, "anthropic", "claude-haiku-4-5", "claude-up").await;
        serve(&app, &mock, "openai_compatible", "qwen-turbo", "qwen-up").await;
        let key = app.funded_key("m1", "10").await;
        let mut n = 0;
        for (model, native) in [("claude-haiku-4-5", true), ("qwen-turbo", false)] {
            for stream in [false, true] {
                let (status, raw) = messages(&app, &key, &messages_body(model, stream)).await;
                assert_eq!(status, 200, "{model} stream {stream}: {raw}");
                if stream {
                    let evs = events(&raw);
                    let kinds: Vec<&str> = evs.iter().filter_map(|e| e["type"].as_str()).collect();
                    assert_eq!(kinds.first(), Some(&"message_start"), "{raw}");
                    assert_eq!(kinds.last(), Some(&"message_stop"), "{raw}");
                    let text: String = evs
                        .iter()
                        .filter_map(|e| e["delta"]["text"].as_str())
                        .collect();
                    assert_eq!(text, REPLY);
                    assert!(raw.contains("event: message_delta"), "{raw}");
                } else {
                    let v: Value = serde_json::from_str(&raw).expect("json");
                    assert_eq!(v["type"], "message", "{raw}");
                    assert_eq!(v["role"], "assistant");
                    assert_eq!(v["content"][0]["text"], REPLY);
                    assert_eq!(v["stop_reason"], "end_turn");
                    assert_eq!(v["usage"]["output_tokens"], 18);
                }
                n += 1;
                let row = last_charge(&app, "m1", n).await;
                assert_eq!(row["quota"], CALL_QUOTA, "{model} stream {stream}: {row}");
                assert_eq!(
                    (
                        row["prompt_tokens"].clone(),
                        row["completion_tokens"].clone()
                    ),
                    (json!(14), json!(18))
                );
                let upstream = mock.requests().last().cloned().expect("called");
                if native {
                    assert_eq!(upstream.path, "/v1/messages");
                    assert_eq!(upstream.header("x-api-key"), Some("sk-upstream-secret"));
                    assert_eq!(upstream.header("anthropic-version"), Some("2023-06-01"));
                    assert_eq!(upstream.body["system"], "be kind", "passed through");
                    assert_eq!(upstream.body["model"], "claude-up");
                } else {
                    assert_eq!(upstream.path, "/v1/chat/completions");
                    assert_eq!(upstream.body["messages"][0]["role"], "system");
                    assert_eq!(upstream.body["model"], "qwen-up");
                    assert_eq!(
                        upstream.header("authorization"),
                        Some("Bearer sk-upstream-secret")
                    );
                }
            }
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn chat_completions_reach_anthropic_channels_converted() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        serve(&app, &mock, "anthropic", "claude-sonnet-4-5", "claude-up").await;
        let key = app.funded_key("c1", "10").await;
        let ask = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "你好！"}]});
        let r = app.chat(&key, &ask).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["object"], "chat.completion");
        assert_eq!(r.body["choices"][0]["message"]["content"], REPLY);
        assert_eq!(r.body["choices"][0]["finish_reason"], "stop");
        assert_eq!(r.body["usage"]["prompt_tokens"], 14);
        let upstream = mock.requests().last().cloned().expect("called");
        assert_eq!(upstream.path, "/v1/messages");
        assert_eq!(
            upstream.body["max_tokens"], 4096,
            "Anthropic requires max_tokens"
        );
        assert_eq!(last_charge(&app, "c1", 1).await["quota"], CALL_QUOTA);

        let mut body = ask.clone();
        body["stream"] = json!(true);
        let (status, _, raw) = app.chat_stream(&key, &body).await;
        assert_eq!(status, 200);
        let chunks = events(&raw);
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, REPLY);
        assert!(raw.trim_end().ends_with("data: [DONE]"), "{raw}");
        assert!(
            !chunks
                .iter()
                .any(|c| c["choices"].as_array().is_some_and(Vec::is_empty)),
            "no usage chunk unless asked: {raw}"
        );
        assert_eq!(last_charge(&app, "c1", 2).await["quota"], CALL_QUOTA);
        app.stop().await;
    }
}

#[tokio::test]
async fn cache_reads_bill_at_the_cached_price_in_both_formats() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        serve(&app, &mock, "anthropic", "claude-haiku-4-5", "cached").await;
        serve(&app, &mock, "openai_compatible", "qwen-turbo", "cached").await;
        let key = app.funded_key("cache", "10").await;
        // 14 prompt tokens, 8 of them cache reads ($1), the rest (writes included) at $2, and
        // 18 out at $6: ceil((6 × 2 + 8 × 1 + 18 × 6) / 2) = 64.
        let (status, raw) = messages(&app, &key, &messages_body("claude-haiku-4-5", false)).await;
        assert_eq!(status, 200, "{raw}");
        assert_eq!(last_charge(&app, "cache", 1).await["quota"], 64);
        let r = app
            .chat(
                &key,
                &json!({"model": "qwen-turbo", "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(last_charge(&app, "cache", 2).await["quota"], 64);
        assert_eq!(CACHED_TOKENS, 8);
        app.stop().await;
    }
}

#[tokio::test]
async fn embeddings_bill_input_tokens_only_and_completions_bill_like_chat() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        serve(&app, &mock, "openai", "text-embedding-3-small", "embed-up").await;
        serve(
            &app,
            &mock,
            "openai_compatible",
            "gpt-3.5-turbo-instruct",
            "instruct-up",
        )
        .await;
        let key = app.funded_key("e1", "10").await;
        let input = json!(["hello world", "你好"]);
        let r = post_json(
            &app,
            "/v1/embeddings",
            &key,
            &json!({"model": "text-embedding-3-small", "input": input}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["data"].as_array().map(Vec::len), Some(2));
        let tokens = i64::try_from(embedding_tokens(&input).expect("tokens")).expect("n");
        let row = last_charge(&app, "e1", 1).await;
        assert_eq!(
            (
                row["prompt_tokens"].clone(),
                row["completion_tokens"].clone()
            ),
            (json!(tokens), json!(0))
        );
        // tokens × $2 / 1M = tokens quota (500,000 quota per $).
        assert_eq!(row["quota"], tokens);
        assert_eq!(
            mock.requests().last().map(|r| r.path.clone()).as_deref(),
            Some("/v1/embeddings")
        );

        let prompt =
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", "max_tokens": 50});
        let r = post_json(&app, "/v1/completions", &key, &prompt).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["object"], "text_completion");
        assert_eq!(last_charge(&app, "e1", 2).await["quota"], CALL_QUOTA);
        let mut streamed = prompt.clone();
        streamed["stream"] = json!(true);
        let res = app
            .client
            .post(format!("{}/v1/completions", app.base))
            .bearer_auth(&key)
            .json(&streamed)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 200);
        let raw = res.text().await.expect("body");
        let text: String = events(&raw)
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(text, REPLY);
        assert_eq!(last_charge(&app, "e1", 3).await["quota"], CALL_QUOTA);

        // An answer far larger than what the upstream client reads at a time (two vectors of
        // 1,536 floats, about 30 KB) arrives whole and is billed once.
        let large = json!({"model": "text-embedding-3-small", "input": input, "dimensions": 1536});
        let r = post_json(&app, "/v1/embeddings", &key, &large).await;
        assert_eq!(r.status, 200, "{}", r.body);
        for i in 0..2 {
            assert_eq!(
                r.body["data"][i]["embedding"],
                json!(embedding_vector(i, 1536)),
                "{}: vector {i}",
                app.backend
            );
        }
        assert_eq!(last_charge(&app, "e1", 4).await["quota"], tokens);

        // An embedding model served only by an Anthropic channel is not served for embeddings.
        serve(&app, &mock, "anthropic", "text-embedding-3-large", "x").await;
        let r = app
            .send(
                Method::POST,
                "/v1/embeddings",
                Some(&key),
                Some(br#"{"model":"text-embedding-3-large","input":"x"}"#.to_vec()),
                Some("application/json"),
            )
            .await;
        assert_eq!(r.status, 404, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "model_not_found");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_client_leaving_a_messages_stream_pays_for_what_was_delivered() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        serve(&app, &mock, "anthropic", "claude-haiku-4-5", "long").await;
        let key = app.funded_key("gone", "10").await;
        let mut res = app
            .client
            .post(format!("{}/v1/messages", app.base))
            .header("x-api-key", &key)
            .json(&messages_body("claude-haiku-4-5", true))
            .send()
            .await
            .expect("sent");
        let mut got = String::new();
        while got.matches("content_block_delta").count() < 5 {
            let chunk = res.chunk().await.expect("chunk").expect("more");
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
        drop(res);
        let row = last_charge(&app, "gone", 1).await;
        let completion = row["completion_tokens"].as_i64().expect("n");
        assert!(completion > 0, "never zero after content: {row}");
        assert!(completion < 120, "only what was delivered: {row}");
        let info = app.no_hold_left("gone").await;
        assert_eq!(info["total_requests"], 1);
        app.stop().await;
    }
}

#[tokio::test]
async fn messages_errors_come_in_anthropic_shape() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        serve(&app, &mock, "anthropic", "claude-haiku-4-5", "claude-up").await;
        serve(&app, &mock, "anthropic", "m-400", "fail-400").await;
        serve(&app, &mock, "openai_compatible", "m-400-openai", "fail-400").await;
        serve(&app, &mock, "anthropic", "m-500", "fail-500").await;
        app.admin(
            Method::PUT,
            "/pricing/m-off",
            Some(json!({"input": 1, "output": 1})),
        )
        .await
        .data();
        let off = app
            .channel("anthropic", &mock.base_url, &[("m-off", "x")], 0)
            .await;
        app.admin(Method::POST, &format!("/channels/{off}/disable"), None)
            .await
            .data();
        let key = app.funded_key("err", "10").await;
        let broke = app.funded_key("broke", "0").await;
        let cases: Vec<(&str, Value, u16, &str)> = vec![
            (
                "sk-invalid",
                messages_body("claude-haiku-4-5", false),
                401,
                "authentication_error",
            ),
            (
                &broke,
                messages_body("claude-haiku-4-5", false),
                403,
                "permission_error",
            ),
            (
                &key,
                messages_body("no-such-model", false),
                404,
                "not_found_error",
            ),
            (
                &key,
                json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}]}),
                400,
                "invalid_request_error",
            ),
            (&key, messages_body("m-off", false), 503, "api_error"),
            (&key, messages_body("m-500", false), 502, "api_error"),
            (
                &key,
                messages_body("m-400", false),
                400,
                "invalid_request_error",
            ),
            (
                &key,
                messages_body("m-400-openai", false),
                400,
                "invalid_request_error",
            ),
        ];
        for (k, body, status, kind) in cases {
            let (got, raw) = messages(&app, k, &body).await;
            assert_eq!(got, status, "{body}: {raw}");
            let v: Value = serde_json::from_str(&raw).expect("json");
            assert_eq!(v["type"], "error", "{raw}");
            assert_eq!(v["error"]["type"], kind, "{raw}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{raw}"
            );
            assert!(
                !raw.contains("sk-upstream-secret"),
                "the channel key leaked: {raw}"
            );
        }
        let big = vec![b'x'; 9 * 1024 * 1024];
        let res = app
            .client
            .post(format!("{}/v1/messages", app.base))
            .header("x-api-key", &key)
            .body(big)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 413);
        let v: Value = res.json().await.expect("json");
        assert_eq!(v["error"]["type"], "invalid_request_error");

        // count_tokens: the prompt's tokens, no charge.
        let res = app
            .client
            .post(format!("{}/v1/messages/count_tokens", app.base))
            .header("x-api-key", &key)
            .json(&json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hello world"}]}))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.expect("json");
        // 3 + (3 + "user" 1 + "hello world" 2) = 9, as for chat.
        assert_eq!(v["input_tokens"], 9, "{v}");
        let info = app.user_info("err").await;
        assert_eq!(
            info["total_requests"], 0,
            "no error and no count is charged"
        );
        app.stop().await;
    }
}
