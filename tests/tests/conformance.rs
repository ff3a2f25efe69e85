//! The adapter conformance suite: every HTTP provider adapter (`openai`, `dashscope`,
//! `deepseek`, `openai_compatible`, `gemini`, and `anthropic` through the chat ⇄ Messages
//! conversion) runs the same checks against the mock provider — request path and
//! authentication, JSON and SSE answers, usage billing, usage hidden from clients that did not
//! ask, upstream errors. The `echo` adapter runs the wire-format checks locally.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_tests::TestApp;
use tollgate_tests::mock::{MockProvider, REPLY};

const KINDS: [&str; 6] = [
    "openai",
    "dashscope",
    "deepseek",
    "openai_compatible",
    "gemini",
    "anthropic",
];

fn ask(model: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "你好！"}], "stream": stream})
}

fn data_lines(raw: &str) -> Vec<String> {
    raw.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_adapter_speaks_the_same_wire_format_and_bills_the_same() {
    // Billing goes through the database: every configured backend.
    for app in TestApp::all().await {
        app.price("qwen-turbo", "2.0", "6.0").await;
        app.price("m-500", "2.0", "6.0").await;
        app.price("m-400", "2.0", "6.0").await;
        for (n, kind) in KINDS.into_iter().enumerate() {
            let mock = MockProvider::start().await;
            let id = app
                .channel(
                    kind,
                    &mock.base_url,
                    &[
                        ("qwen-turbo", "qwen-turbo"),
                        ("m-500", "fail-500"),
                        ("m-400", "fail-400"),
                    ],
                    0,
                )
                .await;
            let user = format!("conf-{kind}");
            let key = app.funded_key(&user, "1").await;

            let r = app.chat(&key, &ask("qwen-turbo", false)).await;
            assert_eq!(r.status, 200, "{kind}: {}", r.body);
            assert_eq!(r.body["choices"][0]["message"]["content"], REPLY, "{kind}");
            let seen = mock.requests();
            let (path, auth, credential) = if kind == "anthropic" {
                ("/v1/messages", "x-api-key", "sk-upstream-secret")
            } else {
                (
                    "/v1/chat/completions",
                    "authorization",
                    "Bearer sk-upstream-secret",
                )
            };
            assert_eq!(seen[0].path, path, "{kind}");
            assert_eq!(seen[0].header(auth), Some(credential), "{kind}");
            assert_eq!(
                seen[0].header("content-type"),
                Some("application/json"),
                "{kind}"
            );

            let (status, ctype, raw) = app.chat_stream(&key, &ask("qwen-turbo", true)).await;
            assert_eq!(status, 200, "{kind}");
            assert!(ctype.starts_with("text/event-stream"), "{kind}");
            let events = data_lines(&raw);
            assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{kind}");
            assert!(!raw.contains("\"usage\""), "{kind}: usage shown unasked");
            let info = app.settled(&user, 2).await;
            assert_eq!(info["used_quota"], 2 * 68, "{kind}");

            let r = app.chat(&key, &ask("m-500", false)).await;
            assert_eq!(
                (r.status.as_u16(), r.body["error"]["code"].as_str()),
                (502, Some("upstream_error")),
                "{kind}"
            );
            let r = app.chat(&key, &ask("m-400", false)).await;
            assert_eq!(r.status, 400, "{kind}");
            assert!(
                !r.body.to_string().contains("sk-upstream-secret"),
                "{kind}: key leaked"
            );

            // Leave the next adapter alone on qwen-turbo.
            app.admin(Method::DELETE, &format!("/channels/{id}"), None)
                .await
                .data();
            assert_eq!(
                app.settled(&user, 2).await["total_requests"],
                2,
                "{kind} #{n}"
            );
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn the_echo_adapter_needs_no_network() {
    let app = TestApp::start(tollgate_storage::testing::sqlite_url(), "sqlite").await;
    app.echo_model("qwen-turbo").await;
    let key = app.funded_key("echo", "1").await;
    let mut body = ask("qwen-turbo", true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, _, raw) = app.chat_stream(&key, &body).await;
    assert_eq!(status, 200);
    let events = data_lines(&raw);
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).expect("usage chunk");
    assert!(usage["usage"]["prompt_tokens"].as_u64().expect("n") > 0);
    assert_eq!(usage["choices"], json!([]));
    app.stop().await;
}
