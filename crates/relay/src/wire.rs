//! The OpenAI chat-completions wire format, parsed only as far as billing and routing need:
//! the request's `model`, `messages`, `stream`, `stream_options` and token limit (everything
//! else passes through untouched), and `usage` plus delivered text in answers and SSE chunks.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};
use tollgate_domain::pricing::{ModelName, Usage};

/// A client's chat-completions request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    body: Map<String, Value>,
    /// Public model name.
    pub model: ModelName,
    /// Whether the client asked for SSE.
    pub stream: bool,
    /// Whether the client asked to see the usage chunk.
    pub include_usage: bool,
    /// `max_completion_tokens` or `max_tokens`, when set.
    pub max_tokens: Option<u64>,
    /// `n`: how many choices to generate (1 when absent); each may use the token limit.
    pub choices: u64,
}

fn bad(msg: impl Into<String>) -> String {
    msg.into()
}

impl ChatRequest {
    /// Parses and checks a request body; the error is a message for the client.
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        let body: Map<String, Value> = match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(bad("request body must be a JSON object")),
            Err(e) => return Err(format!("invalid JSON body: {e}")),
        };
        let model = match body.get("model") {
            Some(Value::String(s)) => {
                ModelName::parse(s).ok_or_else(|| bad("model must be a non-empty model name"))?
            }
            None | Some(Value::Null) => return Err(bad("you must provide a model parameter")),
            Some(_) => return Err(bad("model must be a string")),
        };
        match body.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => {
                if m.iter().any(|x| !x.is_object()) {
                    return Err(bad("each message must be an object"));
                }
            }
            Some(Value::Array(_)) => return Err(bad("messages must not be empty")),
            None | Some(Value::Null) => return Err(bad("you must provide messages")),
            Some(_) => return Err(bad("messages must be an array")),
        }
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("stream must be a boolean")),
        };
        let include_usage = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad("stream_options.include_usage must be a boolean")),
            },
            Some(_) => return Err(bad("stream_options must be an object")),
        };
        let mut max_tokens = None;
        for field in ["max_tokens", "max_completion_tokens"] {
            match body.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(v) => max_tokens = Some(max_tokens.map_or(v, |m: u64| m.min(v))),
                    None => return Err(format!("{field} must be a non-negative integer")),
                },
                Some(_) => return Err(format!("{field} must be an integer")),
            }
        }
        let choices = match body.get("n") {
            None | Some(Value::Null) => 1,
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|n| (1..=128).contains(n))
                .ok_or_else(|| bad("n must be an integer from 1 to 128"))?,
            Some(_) => return Err(bad("n must be an integer")),
        };
        Ok(ChatRequest {
            body,
            model,
            stream,
            include_usage,
            max_tokens,
            choices,
        })
    }

    /// The body as received.
    #[must_use]
    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }

    /// The body to send upstream: the upstream's model name, and for streams
    /// `stream_options.include_usage = true` so the call can be billed from the provider's
    /// own count. Every other field is kept as the client sent it.
    #[must_use]
    pub fn upstream_body(&self, upstream_model: &str) -> Bytes {
        let mut body = self.body.clone();
        body.insert("model".into(), Value::String(upstream_model.to_owned()));
        if self.stream {
            let mut opts = match body.remove("stream_options") {
                Some(Value::Object(o)) => o,
                _ => Map::new(),
            };
            opts.insert("include_usage".into(), Value::Bool(true));
            body.insert("stream_options".into(), Value::Object(opts));
        }
        Bytes::from(Value::Object(body).to_string())
    }
}

/// `usage` as providers send it (OpenAI, DashScope and DeepSeek spell cached tokens
/// differently).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireUsage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    /// Completion tokens.
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    /// OpenAI/DashScope cached tokens.
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    /// DeepSeek cached tokens.
    #[serde(default)]
    pub prompt_cache_hit_tokens: Option<u64>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PromptDetails {
    /// Cached prompt tokens.
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

impl WireUsage {
    /// As a domain usage, with the cached count from either spelling.
    #[must_use]
    pub fn to_usage(&self) -> Usage {
        let cached = self
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .or(self.prompt_cache_hit_tokens)
            .unwrap_or(0);
        Usage {
            prompt_tokens: self.prompt_tokens.unwrap_or(0),
            completion_tokens: self.completion_tokens.unwrap_or(0),
            cached_tokens: cached,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct TextView {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    reasoning_content: Option<String>,
}

impl TextView {
    fn push_to(&self, out: &mut String) {
        if let Some(r) = &self.reasoning_content {
            out.push_str(r);
        }
        match &self.content {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(other) => out.push_str(&other.to_string()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ChoiceView {
    #[serde(default)]
    message: Option<TextView>,
    #[serde(default)]
    delta: Option<TextView>,
}

/// What billing reads from a non-stream answer or one SSE chunk.
#[derive(Debug, Default, Deserialize)]
pub struct AnswerView {
    #[serde(default)]
    choices: Option<Vec<ChoiceView>>,
    /// Usage, when present.
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

impl AnswerView {
    /// Parses an answer or chunk; `None` when it is not a JSON object of that shape.
    #[must_use]
    pub fn parse(raw: &[u8]) -> Option<Self> {
        serde_json::from_slice(raw).ok()
    }

    /// Appends the generated text (message or delta, reasoning included) to `out`.
    pub fn text_into(&self, out: &mut String) {
        for c in self.choices.iter().flatten() {
            if let Some(m) = &c.message {
                m.push_to(out);
            }
            if let Some(d) = &c.delta {
                d.push_to(out);
            }
        }
    }

    /// The chunk that only carries usage (no choices), which clients see only on request.
    #[must_use]
    pub fn is_usage_only(&self) -> bool {
        self.usage.is_some() && self.choices.as_ref().is_none_or(Vec::is_empty)
    }
}

/// Splits an SSE byte stream into events (each ends with a blank line; `\n` or `\r\n`).
#[derive(Debug, Default)]
pub struct SseSplitter {
    buf: Vec<u8>,
}

impl SseSplitter {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event with its terminator, if one has arrived.
    pub fn next_event(&mut self) -> Option<Vec<u8>> {
        let end = find_event_end(&self.buf)?;
        let rest = self.buf.split_off(end);
        Some(std::mem::replace(&mut self.buf, rest))
    }

    /// Whatever is left after the stream ended (an unterminated last event).
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

fn find_event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// The `data` of an SSE event (several `data:` lines joined by `\n`), if it has any.
#[must_use]
pub fn event_data(event: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(event);
    let mut data: Option<String> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(v) = line.strip_prefix("data:") {
            let v = v.strip_prefix(' ').unwrap_or(v);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(v);
                }
                None => data = Some(v.to_owned()),
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_billing_needs_and_keeps_the_rest() {
        let r = ChatRequest::parse(
            br#"{"model":"qwen-turbo","messages":[{"role":"user","content":"hi"}],"max_tokens":200,"temperature":0.7,"x_custom":{"a":1}}"#,
        )
        .expect("valid");
        assert_eq!(r.model.as_str(), "qwen-turbo");
        assert_eq!(r.max_tokens, Some(200));
        assert!(!r.stream);
        let up: Value =
            serde_json::from_slice(&r.upstream_body("qwen-turbo-latest")).expect("json");
        assert_eq!(up["model"], "qwen-turbo-latest");
        assert_eq!(up["temperature"].to_string(), "0.7");
        assert_eq!(up["x_custom"]["a"], 1);
        assert!(up.get("stream_options").is_none());
        assert_eq!(r.choices, 1);
        let n = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":3}"#,
        )
        .expect("valid");
        assert_eq!(n.choices, 3);
    }

    #[test]
    fn streams_always_ask_for_usage() {
        let r = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"other":1}}"#,
        )
        .expect("valid");
        assert!(r.stream && !r.include_usage);
        let up: Value = serde_json::from_slice(&r.upstream_body("m")).expect("json");
        assert_eq!(up["stream_options"]["include_usage"], true);
        assert_eq!(up["stream_options"]["other"], 1);
    }

    #[test]
    fn rejects_bad_requests() {
        for body in [
            &b"{"[..],
            b"[]",
            br#"{"messages":[{"role":"user","content":"x"}]}"#,
            br#"{"model":"m"}"#,
            br#"{"model":"m","messages":[]}"#,
            br#"{"model":3,"messages":[{"role":"user","content":"x"}]}"#,
            br#"{"model":"m","messages":"x"}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#,
        ] {
            assert!(
                ChatRequest::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn reads_usage_in_every_spelling() {
        let a = AnswerView::parse(br#"{"choices":[],"usage":{"prompt_tokens":14,"completion_tokens":18,"prompt_tokens_details":{"cached_tokens":4}}}"#).expect("json");
        assert!(a.is_usage_only());
        let u = a.usage.expect("usage").to_usage();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
            (14, 18, 4)
        );
        let d = AnswerView::parse(
            br#"{"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_cache_hit_tokens":7}}"#,
        )
        .expect("json");
        assert_eq!(d.usage.expect("usage").to_usage().cached_tokens, 7);
        let c = AnswerView::parse(
            r#"{"choices":[{"delta":{"content":"你好","reasoning_content":"想"}}]}"#.as_bytes(),
        )
        .expect("json");
        let mut text = String::new();
        c.text_into(&mut text);
        assert_eq!(text, "想你好");
        assert!(!c.is_usage_only());
    }

    #[test]
    fn splits_sse_events_across_reads() {
        let mut s = SseSplitter::default();
        s.push(b"data: {\"a\":1}\n");
        assert!(s.next_event().is_none());
        s.push(b"\ndata: [DONE]\r\n\r\n: comment");
        let e1 = s.next_event().expect("first");
        assert_eq!(event_data(&e1).as_deref(), Some("{\"a\":1}"));
        let e2 = s.next_event().expect("second");
        assert_eq!(event_data(&e2).as_deref(), Some("[DONE]"));
        assert!(s.next_event().is_none());
        assert_eq!(s.take_rest(), b": comment");
        assert_eq!(event_data(b": keep-alive\n\n"), None);
        assert_eq!(event_data(b"data:x\ndata:y\n\n").as_deref(), Some("x\ny"));
    }
}
