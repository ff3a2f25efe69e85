//! Provider adapters. Providers speak OpenAI's wire format (chat completions, embeddings, legacy
//! completions) or Anthropic's Messages API, so an adapter is small: where to send the request,
//! how to authenticate, and how its `usage` spells cached tokens. Converting between the two
//! formats is `crate::anthropic`'s business. The `echo` channel answers locally in OpenAI's
//! format.

use crate::tokenizer;
use crate::wire::WireUsage;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http_body_util::Full;
use serde_json::{Value, json};
use tollgate_domain::billing::{Reported, ReportedUsage};
use tollgate_domain::channel::{Channel, ChannelKind};

/// One upstream provider.
pub trait Provider: Send + Sync {
    /// The channel kind this adapter serves.
    fn kind(&self) -> ChannelKind;

    /// The upstream request for `body` to `path` (e.g. `/chat/completions`) on `channel`;
    /// `None` when the channel cannot make one (a key that is not a valid header value).
    fn request(
        &self,
        channel: &Channel,
        path: &str,
        body: Bytes,
    ) -> Option<http::Request<Full<Bytes>>> {
        let mut req = http::Request::post(channel.url(path))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(body))
            .ok()?;
        let key = channel.spec.key.expose();
        if !key.is_empty() {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}")).ok()?;
            value.set_sensitive(true);
            req.headers_mut().insert(AUTHORIZATION, value);
        }
        Some(req)
    }

    /// The usage in this provider's spelling, as reported (checked against the request's
    /// bounds when the call is settled).
    fn usage(&self, wire: &WireUsage) -> ReportedUsage {
        wire.to_reported()
    }
}

/// OpenAI.
#[derive(Debug)]
pub struct OpenAi;

impl Provider for OpenAi {
    fn kind(&self) -> ChannelKind {
        ChannelKind::OpenAi
    }

    fn usage(&self, wire: &WireUsage) -> ReportedUsage {
        ReportedUsage {
            cached: wire.details_cached(),
            ..wire.to_reported()
        }
    }
}

/// Alibaba Cloud DashScope (Qwen) in OpenAI-compatible mode.
#[derive(Debug)]
pub struct DashScope;

impl Provider for DashScope {
    fn kind(&self) -> ChannelKind {
        ChannelKind::DashScope
    }
}

/// DeepSeek, which reports cache hits as `prompt_cache_hit_tokens`.
#[derive(Debug)]
pub struct DeepSeek;

impl Provider for DeepSeek {
    fn kind(&self) -> ChannelKind {
        ChannelKind::DeepSeek
    }

    fn usage(&self, wire: &WireUsage) -> ReportedUsage {
        let cached = match wire.prompt_cache_hit_tokens.0 {
            Reported::Absent => wire.details_cached(),
            r => r,
        };
        ReportedUsage {
            cached,
            ..wire.to_reported()
        }
    }
}

/// Any OpenAI-compatible server (vLLM, Ollama, LM Studio, …); the key is optional.
#[derive(Debug)]
pub struct OpenAiCompatible;

impl Provider for OpenAiCompatible {
    fn kind(&self) -> ChannelKind {
        ChannelKind::OpenAiCompatible
    }
}

/// Answers locally; never makes a request.
#[derive(Debug)]
pub struct Echo;

impl Provider for Echo {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Echo
    }

    fn request(
        &self,
        _channel: &Channel,
        _path: &str,
        _body: Bytes,
    ) -> Option<http::Request<Full<Bytes>>> {
        None
    }
}

/// The version of Anthropic's API Tollgate speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Anthropic's Messages API: the key goes in `x-api-key`, with `anthropic-version`; usage is
/// read by `crate::anthropic::reported_usage`, not from OpenAI's `usage`.
#[derive(Debug)]
pub struct Anthropic;

impl Provider for Anthropic {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Anthropic
    }

    fn request(
        &self,
        channel: &Channel,
        path: &str,
        body: Bytes,
    ) -> Option<http::Request<Full<Bytes>>> {
        let mut key = HeaderValue::from_str(channel.spec.key.expose()).ok()?;
        key.set_sensitive(true);
        http::Request::post(channel.url(path))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("x-api-key", key)
            .header(
                "anthropic-version",
                HeaderValue::from_static(ANTHROPIC_VERSION),
            )
            .body(Full::new(body))
            .ok()
    }
}

/// Google Gemini through its OpenAI-compatible endpoint (Bearer key).
#[derive(Debug)]
pub struct Gemini;

impl Provider for Gemini {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Gemini
    }
}

/// The adapter of a channel kind.
#[must_use]
pub fn for_kind(kind: ChannelKind) -> &'static dyn Provider {
    match kind {
        ChannelKind::OpenAi => &OpenAi,
        ChannelKind::DashScope => &DashScope,
        ChannelKind::DeepSeek => &DeepSeek,
        ChannelKind::OpenAiCompatible => &OpenAiCompatible,
        ChannelKind::Echo => &Echo,
        ChannelKind::Anthropic => &Anthropic,
        ChannelKind::Gemini => &Gemini,
    }
}

/// The echo channel's answer to an upstream body: non-stream JSON, or the SSE events of a
/// stream (usage chunk included when asked), with usage counted by the tokenizer.
#[must_use]
pub fn echo_answer(upstream_body: &[u8]) -> (bool, Vec<Bytes>) {
    let body: serde_json::Map<String, Value> =
        serde_json::from_slice(upstream_body).unwrap_or_default();
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("echo")
        .to_owned();
    let said = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|x| x.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let said: String = said.chars().take(500).collect();
    let reply = format!("Echo from Tollgate: {said}");
    let usage = json!({
        "prompt_tokens": tokenizer::prompt_tokens(&body),
        "completion_tokens": tokenizer::count(&reply),
        "total_tokens": tokenizer::prompt_tokens(&body) + tokenizer::count(&reply),
        "prompt_tokens_details": {"cached_tokens": 0},
    });
    let id = "chatcmpl-echo";
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        let answer = json!({
            "id": id, "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop", "logprobs": null}],
            "usage": usage,
        });
        return (false, vec![Bytes::from(answer.to_string())]);
    }
    let event = |v: Value| Bytes::from(format!("data: {v}\n\n"));
    let chars: Vec<char> = reply.chars().collect();
    let mut events: Vec<Bytes> = chars
        .chunks(16)
        .enumerate()
        .map(|(i, piece)| {
            let mut delta = json!({"content": piece.iter().collect::<String>()});
            if i == 0 {
                delta["role"] = json!("assistant");
            }
            event(
                json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": null}]}),
            )
        })
        .collect();
    events.push(event(
        json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    ));
    let wants_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if wants_usage {
        events.push(event(
            json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [], "usage": usage}),
        ));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    (true, events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AnswerView, event_data};

    #[test]
    fn echo_speaks_the_wire_format_with_usage() {
        let (stream, parts) =
            echo_answer(br#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#);
        assert!(!stream);
        let a = AnswerView::parse(&parts[0]).expect("json");
        let u = a.usage.expect("usage").to_reported();
        // 3 + (3 + "user" + "hello") and "Echo from Tollgate: hello".
        assert_eq!(u, ReportedUsage::counts(8, 6, 0));
        let (stream, events) = echo_answer(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello"}]}"#,
        );
        assert!(stream);
        assert_eq!(
            event_data(events.last().expect("done")).as_deref(),
            Some("[DONE]")
        );
        let usage_chunk = &events[events.len() - 2];
        assert!(
            AnswerView::parse(event_data(usage_chunk).expect("data").as_bytes())
                .expect("json")
                .is_usage_only()
        );
    }

    #[test]
    fn deepseek_and_openai_read_their_cache_fields() {
        let w: WireUsage = serde_json::from_str(
            r#"{"prompt_tokens":10,"completion_tokens":2,"prompt_cache_hit_tokens":6}"#,
        )
        .expect("json");
        assert_eq!(DeepSeek.usage(&w), ReportedUsage::counts(10, 2, 6));
        assert_eq!(OpenAi.usage(&w).cached, Reported::Absent);
        let both: WireUsage = serde_json::from_str(
            r#"{"prompt_tokens":10,"completion_tokens":2,"prompt_cache_hit_tokens":6,"prompt_tokens_details":{"cached_tokens":4}}"#,
        )
        .expect("json");
        assert_eq!(DeepSeek.usage(&both).cached, Reported::Count(6));
        assert_eq!(OpenAi.usage(&both).cached, Reported::Count(4));
        for kind in ChannelKind::ALL {
            assert_eq!(for_kind(kind).kind(), kind);
        }
    }
}
