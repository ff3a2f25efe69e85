//! One relayed call as billing and routing see it, whatever API the client spoke (chat
//! completions, Anthropic Messages, embeddings, legacy completions): its model, whether it
//! streams, its completion limit and choices (what the hold must cover), its estimated prompt,
//! and how to build the upstream request for a channel speaking OpenAI's or Anthropic's wire
//! format — natively, or converted by [`crate::anthropic`].

use crate::anthropic;
use crate::tokenizer;
use crate::wire::{
    ChatRequest, count_of, for_upstream, include_usage_of, limit_of, model_of, object_of, stream_of,
};
use bytes::Bytes;
use serde_json::{Map, Value};
use tollgate_domain::billing::UsageBounds;
use tollgate_domain::channel::{Api, ChannelKind, Wire};
use tollgate_domain::pricing::ModelName;

/// How an answer is read and what the client gets, by client API and upstream wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// OpenAI in, OpenAI out (chat, embeddings, completions).
    OpenAi,
    /// Anthropic in, Anthropic out (`/v1/messages` on an `anthropic` channel).
    Anthropic,
    /// An Anthropic upstream answering an OpenAI chat client.
    AnthropicToOpenAi,
    /// An OpenAI-style upstream answering an Anthropic Messages client.
    OpenAiToAnthropic,
}

impl Codec {
    /// The codec for `api` on an upstream speaking `wire`.
    #[must_use]
    pub fn for_call(api: Api, wire: Wire) -> Self {
        match (api, wire) {
            (Api::Messages, Wire::Anthropic) => Codec::Anthropic,
            (Api::Messages, Wire::OpenAi) => Codec::OpenAiToAnthropic,
            (_, Wire::Anthropic) => Codec::AnthropicToOpenAi,
            (_, Wire::OpenAi) => Codec::OpenAi,
        }
    }
}

/// The request as the client sent it, by API.
#[derive(Debug, Clone)]
enum Shape {
    Chat(ChatRequest),
    /// The Messages request as sent, and as a chat request (for OpenAI-style upstreams and the
    /// billing view).
    Messages {
        original: Map<String, Value>,
        chat: ChatRequest,
    },
    Embeddings(Map<String, Value>),
    Completions(Map<String, Value>),
}

/// A parsed call.
#[derive(Debug, Clone)]
pub struct Call {
    /// The client's API.
    pub api: Api,
    /// Public model name.
    pub model: ModelName,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Whether an OpenAI client asked to see the usage chunk.
    pub include_usage: bool,
    /// The completion limit per choice, when the request sets one (`Some(0)` for embeddings,
    /// which generate nothing).
    pub max_tokens: Option<u64>,
    /// How many completions may be generated (choices, times prompts for legacy completions).
    pub choices: u64,
    /// Size of the request body.
    pub body_bytes: u64,
    /// Media parts whose tokens the body's bytes do not bound.
    pub media_parts: u64,
    /// Estimated prompt tokens (tokenizer, bounded work).
    pub prompt_estimate: u64,
    shape: Shape,
}

fn bad(msg: impl Into<String>) -> String {
    msg.into()
}

/// Texts and token arrays of an `input` (embeddings) or `prompt` (completions): a string, an
/// array of strings, an array of token ids, or an array of arrays of token ids. Returns the
/// texts, the number of tokens given as ids, and how many separate inputs there are.
fn inputs<'a>(value: Option<&'a Value>, field: &str) -> Result<(Vec<&'a str>, u64, u64), String> {
    let shape_error = || {
        format!(
            "{field} must be a string, an array of strings, an array of token ids or an array of token-id arrays"
        )
    };
    let tokens = |items: &[Value]| -> Option<u64> {
        items
            .iter()
            .all(|t| t.as_u64().is_some())
            .then_some(items.len() as u64)
    };
    match value {
        None | Some(Value::Null) => Err(format!("you must provide {field}")),
        Some(Value::String(s)) => Ok((vec![s.as_str()], 0, 1)),
        Some(Value::Array(items)) if items.is_empty() => Err(format!("{field} must not be empty")),
        Some(Value::Array(items)) => {
            if items.iter().all(Value::is_string) {
                let texts = items.iter().filter_map(Value::as_str).collect::<Vec<_>>();
                let n = texts.len() as u64;
                return Ok((texts, 0, n));
            }
            if let Some(n) = tokens(items) {
                return Ok((Vec::new(), n, 1));
            }
            let mut total = 0u64;
            for item in items {
                let Value::Array(ids) = item else {
                    return Err(shape_error());
                };
                total = total.saturating_add(tokens(ids).ok_or_else(shape_error)?);
            }
            Ok((Vec::new(), total, items.len() as u64))
        }
        Some(_) => Err(shape_error()),
    }
}

impl Call {
    /// Parses and checks a request body of `api`; the error is a message for the client. Runs
    /// the tokenizer (bounded per request): call it off the async workers for large bodies.
    pub fn parse(api: Api, raw: &[u8]) -> Result<Self, String> {
        let body_bytes = raw.len() as u64;
        match api {
            Api::Chat => {
                let chat = ChatRequest::parse(raw)?;
                let prompt_estimate = tokenizer::prompt_tokens(chat.body());
                Ok(Call {
                    api,
                    model: chat.model.clone(),
                    stream: chat.stream,
                    include_usage: chat.include_usage,
                    max_tokens: chat.max_tokens,
                    choices: chat.choices,
                    body_bytes,
                    media_parts: chat.media_parts,
                    prompt_estimate,
                    shape: Shape::Chat(chat),
                })
            }
            Api::Messages => {
                let original = object_of(raw)?;
                let model = model_of(&original)?;
                let stream = stream_of(&original)?;
                let converted =
                    anthropic::messages_request_to_chat(&Value::Object(original.clone()))
                        .map_err(|e| e.0)?;
                let chat = ChatRequest::parse(converted.to_string().as_bytes())?;
                let prompt_estimate = tokenizer::prompt_tokens(chat.body());
                Ok(Call {
                    api,
                    model,
                    stream,
                    include_usage: false,
                    max_tokens: chat.max_tokens,
                    choices: 1,
                    body_bytes,
                    media_parts: chat.media_parts,
                    prompt_estimate,
                    shape: Shape::Messages { original, chat },
                })
            }
            Api::Embeddings => {
                let body = object_of(raw)?;
                let model = model_of(&body)?;
                if stream_of(&body)? {
                    return Err(bad("embeddings cannot be streamed"));
                }
                let (texts, ids, _) = inputs(body.get("input"), "input")?;
                let prompt_estimate = tokenizer::texts_tokens(texts).saturating_add(ids);
                Ok(Call {
                    api,
                    model,
                    stream: false,
                    include_usage: false,
                    max_tokens: Some(0),
                    choices: 1,
                    body_bytes,
                    media_parts: 0,
                    prompt_estimate,
                    shape: Shape::Embeddings(body),
                })
            }
            Api::Completions => {
                let body = object_of(raw)?;
                let model = model_of(&body)?;
                let stream = stream_of(&body)?;
                let include_usage = include_usage_of(&body)?;
                let max_tokens = limit_of(&body)?;
                let n = count_of(&body, "n")?;
                let best_of = count_of(&body, "best_of")?;
                let (texts, ids, prompts) = inputs(body.get("prompt"), "prompt")?;
                let prompt_estimate = tokenizer::texts_tokens(texts).saturating_add(ids);
                Ok(Call {
                    api,
                    model,
                    stream,
                    include_usage,
                    max_tokens,
                    // Each prompt gets `max(n, best_of)` generations, each up to the limit.
                    choices: n.max(best_of).saturating_mul(prompts),
                    body_bytes,
                    media_parts: 0,
                    prompt_estimate,
                    shape: Shape::Completions(body),
                })
            }
        }
    }

    /// Completion tokens the hold covers: the limit (or `default` when the request sets none)
    /// for every choice.
    #[must_use]
    pub fn hold_completion(&self, default: u64) -> u64 {
        self.max_tokens
            .unwrap_or(default)
            .saturating_mul(self.choices)
    }

    /// The most usage an upstream may believably report for this call.
    #[must_use]
    pub fn bounds(&self) -> UsageBounds {
        UsageBounds::for_request(
            self.body_bytes,
            self.media_parts,
            self.max_tokens,
            self.choices,
        )
    }

    /// The upstream request for a channel of `kind` (its path and body) and how to read its
    /// answer; `default_max_tokens` fills Anthropic's required `max_tokens` when a chat request
    /// sets none.
    pub fn upstream(
        &self,
        kind: ChannelKind,
        upstream_model: &str,
        default_max_tokens: u64,
    ) -> Result<(&'static str, Bytes, Codec), String> {
        let wire = kind.wire();
        let body = match (&self.shape, wire) {
            (Shape::Chat(chat), Wire::OpenAi) | (Shape::Messages { chat, .. }, Wire::OpenAi) => {
                chat.upstream_body(upstream_model)
            }
            (Shape::Chat(chat), Wire::Anthropic) => {
                let mut m = anthropic::chat_request_to_messages(chat.body(), default_max_tokens)
                    .map_err(|e| e.0)?;
                m["model"] = Value::String(upstream_model.to_owned());
                Bytes::from(m.to_string())
            }
            (Shape::Messages { original, .. }, Wire::Anthropic) => {
                let mut body = original.clone();
                body.insert("model".into(), Value::String(upstream_model.to_owned()));
                Bytes::from(Value::Object(body).to_string())
            }
            (Shape::Embeddings(body), Wire::OpenAi) => for_upstream(body, upstream_model, false),
            (Shape::Completions(body), Wire::OpenAi) => {
                for_upstream(body, upstream_model, self.stream)
            }
            (Shape::Embeddings(_) | Shape::Completions(_), Wire::Anthropic) => {
                return Err(format!(
                    "{} is not served by {kind} channels",
                    self.model.as_str()
                ));
            }
        };
        Ok((self.api.path(wire), body, Codec::for_call(self.api, wire)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(b: &Bytes) -> Value {
        serde_json::from_slice(b).expect("json")
    }

    #[test]
    fn chat_goes_natively_to_openai_and_converted_to_anthropic() {
        let call = Call::parse(
            Api::Chat,
            br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"stream":true}"#,
        )
        .expect("valid");
        let (path, body, codec) = call
            .upstream(ChannelKind::DeepSeek, "up", 4096)
            .expect("openai");
        assert_eq!((path, codec), ("/chat/completions", Codec::OpenAi));
        assert_eq!(json(&body)["stream_options"]["include_usage"], true);
        let (path, body, codec) = call
            .upstream(ChannelKind::Anthropic, "claude", 4096)
            .expect("anthropic");
        assert_eq!((path, codec), ("/messages", Codec::AnthropicToOpenAi));
        let m = json(&body);
        assert_eq!(m["model"], "claude");
        assert_eq!(m["max_tokens"], 4096);
        assert!(m["system"].to_string().contains("be brief"), "{m}");
    }

    #[test]
    fn messages_go_natively_to_anthropic_and_converted_to_openai() {
        let raw = br#"{"model":"claude-haiku-4-5","max_tokens":300,"system":"s","messages":[{"role":"user","content":"hi"}],"metadata":{"user_id":"u"}}"#;
        let call = Call::parse(Api::Messages, raw).expect("valid");
        assert_eq!(
            (call.max_tokens, call.choices, call.stream),
            (Some(300), 1, false)
        );
        assert!(call.prompt_estimate > 0);
        let (path, body, codec) = call
            .upstream(ChannelKind::Anthropic, "claude-x", 1)
            .expect("native");
        assert_eq!((path, codec), ("/messages", Codec::Anthropic));
        let m = json(&body);
        assert_eq!(m["model"], "claude-x");
        assert_eq!(m["metadata"]["user_id"], "u", "passed through untouched");
        let (path, body, codec) = call
            .upstream(ChannelKind::OpenAi, "gpt", 1)
            .expect("converted");
        assert_eq!(
            (path, codec),
            ("/chat/completions", Codec::OpenAiToAnthropic)
        );
        let c = json(&body);
        assert_eq!(c["model"], "gpt");
        assert_eq!(c["messages"][0]["role"], "system");
        assert!(
            Call::parse(Api::Messages, br#"{"model":"m","messages":[]}"#).is_err(),
            "max_tokens is required"
        );
    }

    #[test]
    fn embeddings_hold_input_only_and_accept_every_input_shape() {
        for (input, ids) in [
            (r#""hello world""#, 0),
            (r#"["hello","world"]"#, 0),
            ("[1,2,3]", 3),
            ("[[1,2],[3]]", 3),
        ] {
            let raw =
                format!(r#"{{"model":"text-embedding-3-small","input":{input},"dimensions":8}}"#);
            let call = Call::parse(Api::Embeddings, raw.as_bytes()).expect(input);
            assert_eq!(call.max_tokens, Some(0), "{input}");
            assert_eq!(call.hold_completion(4096), 0);
            assert!(call.prompt_estimate >= ids, "{input}");
            let (path, body, codec) = call
                .upstream(ChannelKind::OpenAi, "emb", 1)
                .expect("openai");
            assert_eq!((path, codec), ("/embeddings", Codec::OpenAi));
            assert_eq!(json(&body)["dimensions"], 8);
            assert!(call.upstream(ChannelKind::Anthropic, "x", 1).is_err());
        }
        let call =
            Call::parse(Api::Embeddings, br#"{"model":"e","input":"hello world"}"#).expect("valid");
        assert_eq!(call.prompt_estimate, 2);
        for bad in [
            &br#"{"model":"e"}"#[..],
            br#"{"model":"e","input":[]}"#,
            br#"{"model":"e","input":[1,"a"]}"#,
            br#"{"model":"e","input":3}"#,
            br#"{"model":"e","input":"x","stream":true}"#,
        ] {
            assert!(
                Call::parse(Api::Embeddings, bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn completions_hold_every_generation_of_every_prompt() {
        let call = Call::parse(
            Api::Completions,
            br#"{"model":"m","prompt":["a","b","c"],"max_tokens":10,"n":2,"best_of":4,"stream":true}"#,
        )
        .expect("valid");
        assert_eq!(call.choices, 12, "3 prompts × best_of 4");
        assert_eq!(call.hold_completion(4096), 120);
        assert_eq!(call.bounds().max_completion(), 120);
        let (path, body, codec) = call
            .upstream(ChannelKind::OpenAiCompatible, "up", 1)
            .expect("openai");
        assert_eq!((path, codec), ("/completions", Codec::OpenAi));
        assert_eq!(json(&body)["stream_options"]["include_usage"], true);
        let plain = Call::parse(Api::Completions, br#"{"model":"m","prompt":"hello world"}"#)
            .expect("valid");
        assert_eq!(
            (plain.choices, plain.max_tokens, plain.prompt_estimate),
            (1, None, 2)
        );
        assert!(Call::parse(Api::Completions, br#"{"model":"m"}"#).is_err());
    }

    #[test]
    fn each_api_and_wire_has_its_codec() {
        assert_eq!(Codec::for_call(Api::Chat, Wire::OpenAi), Codec::OpenAi);
        assert_eq!(
            Codec::for_call(Api::Completions, Wire::OpenAi),
            Codec::OpenAi
        );
        assert_eq!(
            Codec::for_call(Api::Chat, Wire::Anthropic),
            Codec::AnthropicToOpenAi
        );
        assert_eq!(
            Codec::for_call(Api::Messages, Wire::Anthropic),
            Codec::Anthropic
        );
        assert_eq!(
            Codec::for_call(Api::Messages, Wire::OpenAi),
            Codec::OpenAiToAnthropic
        );
    }
}
