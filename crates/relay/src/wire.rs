//! The OpenAI chat-completions wire format, parsed only as far as billing and routing need:
//! the request's `model`, `messages`, `stream`, `stream_options` and token limit (everything
//! else passes through untouched), and `usage` plus delivered text in answers and SSE chunks.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};
use tollgate_domain::billing::{Reported, ReportedUsage};
use tollgate_domain::pricing::ModelName;

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
    /// The largest completion limit the request sets under any spelling a provider honours
    /// ([`LIMIT_FIELDS`]), when it sets one.
    pub max_tokens: Option<u64>,
    /// `n`: how many choices to generate (1 when absent); each may use the token limit.
    pub choices: u64,
    /// Size of the request body in bytes.
    pub body_bytes: u64,
    /// Content parts that are not text (images, audio, video, files), whose tokens the body's
    /// bytes do not bound.
    pub media_parts: u64,
}

/// Completion limits as providers spell them. Providers differ in which one they honour
/// (OpenAI `max_completion_tokens`; DeepSeek, DashScope and most compatible servers
/// `max_tokens`; some `max_output_tokens` or `max_new_tokens`), so the hold takes the largest.
pub const LIMIT_FIELDS: [&str; 4] = [
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "max_new_tokens",
];

fn bad(msg: impl Into<String>) -> String {
    msg.into()
}

/// A request body as a JSON object.
pub(crate) fn object_of(raw: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("request body must be a JSON object")),
        Err(e) => Err(format!("invalid JSON body: {e}")),
    }
}

/// `model`: required, a model name.
pub(crate) fn model_of(body: &Map<String, Value>) -> Result<ModelName, String> {
    match body.get("model") {
        Some(Value::String(s)) => {
            ModelName::parse(s).ok_or_else(|| bad("model must be a non-empty model name"))
        }
        None | Some(Value::Null) => Err(bad("you must provide a model parameter")),
        Some(_) => Err(bad("model must be a string")),
    }
}

/// `stream`: a boolean, false when absent.
pub(crate) fn stream_of(body: &Map<String, Value>) -> Result<bool, String> {
    match body.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad("stream must be a boolean")),
    }
}

/// `stream_options.include_usage`: whether the client wants to see the usage chunk.
pub(crate) fn include_usage_of(body: &Map<String, Value>) -> Result<bool, String> {
    match body.get("stream_options") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(bad("stream_options.include_usage must be a boolean")),
        },
        Some(_) => Err(bad("stream_options must be an object")),
    }
}

/// The largest completion limit under any spelling of [`LIMIT_FIELDS`], if any is set.
pub(crate) fn limit_of(body: &Map<String, Value>) -> Result<Option<u64>, String> {
    let mut max_tokens = None;
    for field in LIMIT_FIELDS {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => match n.as_u64() {
                // The upstream may honour any one of them: the hold covers the largest.
                Some(v) => max_tokens = Some(max_tokens.map_or(v, |m: u64| m.max(v))),
                None => return Err(format!("{field} must be a non-negative integer")),
            },
            Some(_) => return Err(format!("{field} must be an integer")),
        }
    }
    Ok(max_tokens)
}

/// A count field such as `n` or `best_of`: 1 to 128, 1 when absent.
pub(crate) fn count_of(body: &Map<String, Value>, field: &str) -> Result<u64, String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(1),
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|n| (1..=128).contains(n))
            .ok_or_else(|| format!("{field} must be an integer from 1 to 128")),
        Some(_) => Err(format!("{field} must be an integer")),
    }
}

/// The body with `model` set to the upstream's name and, for streams, usage asked for
/// (`stream_options.include_usage`), so the call is billed from the provider's own count.
/// Written straight from the client's parsed body with those fields replaced, never a copy
/// of it: the prompt is most of a body and was cloned, then encoded through `Display`, on every
/// call (the same bytes as inserting into a copy: keys in the map's order).
pub(crate) fn for_upstream(body: &Map<String, Value>, upstream_model: &str, stream: bool) -> Bytes {
    let mut fields = vec![("model", Field::Text(upstream_model))];
    if stream {
        let client_options = match body.get("stream_options") {
            Some(Value::Object(o)) => Some(o),
            _ => None,
        };
        fields.push(("stream_options", Field::UsageAsked(client_options)));
    }
    let out = Replaced {
        body: Some(body),
        fields: &fields,
    };
    // Serializing values already parsed (string keys, finite numbers) cannot fail.
    Bytes::from(serde_json::to_vec(&out).unwrap_or_default())
}

/// A field [`Replaced`] writes instead of the body's own.
enum Field<'a> {
    Text(&'a str),
    /// `stream_options`: the client's (when an object) with `include_usage: true`.
    UsageAsked(Option<&'a Map<String, Value>>),
    True,
}

impl serde::Serialize for Field<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Text(t) => s.serialize_str(t),
            Field::True => s.serialize_bool(true),
            Field::UsageAsked(options) => Replaced {
                body: *options,
                fields: &[("include_usage", Field::True)],
            }
            .serialize(s),
        }
    }
}

/// `body` (none: `{}`) with `fields` set, as an object: every key in the map's order (sorted),
/// a field the body lacks written where the map would have put it. `fields` are sorted.
struct Replaced<'a, 'f> {
    body: Option<&'a Map<String, Value>>,
    fields: &'f [(&'static str, Field<'a>)],
}

impl serde::Serialize for Replaced<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut out = s.serialize_map(None)?;
        let mut fields = self.fields.iter().peekable();
        for (key, value) in self.body.into_iter().flatten() {
            while let Some((k, v)) = fields.next_if(|(k, _)| *k < key.as_str()) {
                out.serialize_entry(k, v)?;
            }
            match fields.next_if(|(k, _)| *k == key.as_str()) {
                Some((_, v)) => out.serialize_entry(key, v)?,
                None => out.serialize_entry(key, value)?,
            }
        }
        for (k, v) in fields {
            out.serialize_entry(k, v)?;
        }
        out.end()
    }
}

impl ChatRequest {
    /// Parses and checks a request body; the error is a message for the client.
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        let body = object_of(raw)?;
        let model = model_of(&body)?;
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
        let stream = stream_of(&body)?;
        let include_usage = include_usage_of(&body)?;
        let max_tokens = limit_of(&body)?;
        let choices = count_of(&body, "n")?;
        let media_parts = media_parts(&body);
        Ok(ChatRequest {
            body,
            model,
            stream,
            include_usage,
            max_tokens,
            choices,
            body_bytes: raw.len() as u64,
            media_parts,
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
        for_upstream(&self.body, upstream_model, self.stream)
    }
}

/// Non-text content parts of the messages (`image_url`, `input_audio`, `video_url`, `file`,
/// …): each may cost many tokens that the request's bytes do not show.
fn media_parts(body: &Map<String, Value>) -> u64 {
    let Some(Value::Array(messages)) = body.get("messages") else {
        return 0;
    };
    messages
        .iter()
        .filter_map(|m| match m.get("content") {
            Some(Value::Array(parts)) => Some(parts),
            _ => None,
        })
        .flatten()
        .filter(|p| !matches!(p.get("type"), Some(Value::String(t)) if t == "text"))
        .count() as u64
}

/// A usage count as sent: read leniently, so a hostile value (negative, fractional, beyond 64
/// bits, a string) is seen as invalid instead of hiding the rest of the answer from billing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireCount(pub Reported);

impl<'de> Deserialize<'de> for WireCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(WireCount(match Value::deserialize(d)? {
            Value::Null => Reported::Absent,
            Value::Number(n) => n.as_u64().map_or(Reported::Invalid, Reported::Count),
            _ => Reported::Invalid,
        }))
    }
}

/// `usage` as providers send it (OpenAI, DashScope and DeepSeek spell cached tokens
/// differently).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireUsage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: WireCount,
    /// Completion tokens.
    #[serde(default)]
    pub completion_tokens: WireCount,
    /// OpenAI/DashScope cached tokens.
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    /// DeepSeek cached tokens.
    #[serde(default)]
    pub prompt_cache_hit_tokens: WireCount,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PromptDetails {
    /// Cached prompt tokens.
    #[serde(default)]
    pub cached_tokens: WireCount,
}

impl WireUsage {
    /// OpenAI's spelling of the cached count.
    #[must_use]
    pub fn details_cached(&self) -> Reported {
        self.prompt_tokens_details
            .as_ref()
            .map_or(Reported::Absent, |d| d.cached_tokens.0)
    }

    /// As reported, with the cached count from either spelling (OpenAI's first).
    #[must_use]
    pub fn to_reported(&self) -> ReportedUsage {
        let cached = match self.details_cached() {
            Reported::Absent => self.prompt_cache_hit_tokens.0,
            r => r,
        };
        ReportedUsage {
            prompt: self.prompt_tokens.0,
            completion: self.completion_tokens.0,
            cached,
        }
    }
}

/// A tool call in a message or a delta: its name and arguments are generated text.
#[derive(Debug, Default, Deserialize)]
struct ToolCallView {
    #[serde(default)]
    function: Option<FunctionView>,
}

#[derive(Debug, Default, Deserialize)]
struct FunctionView {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

impl FunctionView {
    fn push_to(&self, out: &mut String) {
        for part in [&self.name, &self.arguments].into_iter().flatten() {
            out.push_str(part);
        }
    }
}

/// Everything a message or delta carries that the model generated: content, reasoning (both
/// spellings), refusals, tool calls and legacy function calls. All of it is billed when counted.
#[derive(Debug, Default, Deserialize)]
struct TextView {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallView>>,
    #[serde(default)]
    function_call: Option<FunctionView>,
}

impl TextView {
    fn push_to(&self, out: &mut String) {
        for text in [&self.reasoning_content, &self.reasoning, &self.refusal]
            .into_iter()
            .flatten()
        {
            out.push_str(text);
        }
        match &self.content {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(other) => out.push_str(&other.to_string()),
        }
        for call in self.tool_calls.iter().flatten() {
            if let Some(f) = &call.function {
                f.push_to(out);
            }
        }
        if let Some(f) = &self.function_call {
            f.push_to(out);
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ChoiceView {
    #[serde(default)]
    message: Option<TextView>,
    #[serde(default)]
    delta: Option<TextView>,
    /// Legacy completions put the generated text here.
    #[serde(default)]
    text: Option<String>,
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
            if let Some(t) = &c.text {
                out.push_str(t);
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

    /// What [`for_upstream`] wrote before it stopped copying the body: the same bytes.
    fn copied_for_upstream(body: &Map<String, Value>, upstream_model: &str, stream: bool) -> Bytes {
        let mut body = body.clone();
        body.insert("model".into(), Value::String(upstream_model.to_owned()));
        if stream {
            let mut opts = match body.remove("stream_options") {
                Some(Value::Object(o)) => o,
                _ => Map::new(),
            };
            opts.insert("include_usage".into(), Value::Bool(true));
            body.insert("stream_options".into(), Value::Object(opts));
        }
        Bytes::from(Value::Object(body).to_string())
    }

    #[test]
    fn the_upstream_body_is_the_clients_with_model_and_usage_replaced() {
        let bodies = [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"messages":[{"role":"user","content":"你好 \"q\" \u0000"}],"model":"m","temperature":0.7}"#,
            r#"{"a":1,"model":"m","n":2,"stream":true,"stream_options":{"include_usage":false,"x":[1,2]},"zz":null}"#,
            r#"{"model":"m","stream_options":{"a":true,"z":{"k":"v"}}}"#,
            r#"{"model":"m","stream_options":null,"stream_optionsx":1,"stream_option":2}"#,
            r#"{"model":"m","stream_options":"yes","big":123456789012345678901234567890,"tiny":1e-400,"neg":-0.0}"#,
            r#"{"model":"m","stream_options":{},"tools":[{"type":"function","function":{"name":"f","parameters":{}}}]}"#,
            r#"{"Model":"x","model":"m","modem":1,"mode":0,"stream_options":{"include_usage":true}}"#,
            r#"{"model":"m","prompt":["a","b"],"input":[[1,2],[3]]}"#,
        ];
        for raw in bodies {
            let body = object_of(raw.as_bytes()).expect(raw);
            for stream in [false, true] {
                for upstream in ["up-model", "m", "模型 \"x\""] {
                    assert_eq!(
                        for_upstream(&body, upstream, stream),
                        copied_for_upstream(&body, upstream, stream),
                        "{raw}, stream {stream}, upstream {upstream}"
                    );
                }
            }
        }
        // A body without `model` (never passed today) gets one where the map would put it.
        let body = object_of(br#"{"a":1,"z":2}"#).expect("json");
        assert_eq!(
            for_upstream(&body, "m", true),
            copied_for_upstream(&body, "m", true)
        );
        assert_eq!(
            &for_upstream(&body, "m", true)[..],
            br#"{"a":1,"model":"m","stream_options":{"include_usage":true},"z":2}"#
        );
    }

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
        let u = a.usage.expect("usage").to_reported();
        assert_eq!(u, ReportedUsage::counts(14, 18, 4));
        let d = AnswerView::parse(
            br#"{"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_cache_hit_tokens":7}}"#,
        )
        .expect("json");
        assert_eq!(
            d.usage.expect("usage").to_reported().cached,
            Reported::Count(7)
        );
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

    #[test]
    fn the_hold_limit_is_the_largest_spelling() {
        let r = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":100000,"max_completion_tokens":1}"#,
        )
        .expect("valid");
        assert_eq!(r.max_tokens, Some(100_000));
        let r = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":7,"max_output_tokens":9,"max_new_tokens":8}"#,
        )
        .expect("valid");
        assert_eq!(r.max_tokens, Some(9));
        let r = ChatRequest::parse(br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#)
            .expect("valid");
        assert_eq!(r.max_tokens, None);
        assert!(
            ChatRequest::parse(
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_new_tokens":-3}"#
            )
            .is_err()
        );
    }

    #[test]
    fn counts_bytes_and_media_parts_for_the_usage_bounds() {
        let raw = br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"input_audio","input_audio":{}}]},{"role":"user","content":"plain"}]}"#;
        let r = ChatRequest::parse(raw).expect("valid");
        assert_eq!(r.body_bytes, raw.len() as u64);
        assert_eq!(r.media_parts, 2);
    }

    #[test]
    fn hostile_usage_numbers_are_invalid_not_hidden() {
        let a = AnswerView::parse(
            br#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":-5,"completion_tokens":1e15,"prompt_tokens_details":{"cached_tokens":"3"}}}"#,
        )
        .expect("the answer still parses");
        let u = a.usage.as_ref().expect("usage").to_reported();
        assert_eq!(
            u,
            ReportedUsage {
                prompt: Reported::Invalid,
                completion: Reported::Invalid,
                cached: Reported::Invalid
            }
        );
        let mut text = String::new();
        a.text_into(&mut text);
        assert_eq!(text, "hi");
        let big = AnswerView::parse(
            br#"{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":100000000000000000000}}"#,
        )
        .expect("json");
        let u = big.usage.expect("usage").to_reported();
        assert_eq!(u.prompt, Reported::Count(9_223_372_036_854_775_807));
        assert_eq!(u.completion, Reported::Invalid);
        assert_eq!(u.cached, Reported::Absent);
    }

    #[test]
    fn tool_calls_refusals_and_reasoning_count_as_generated_text() {
        let c = AnswerView::parse(
            br#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":"}}]}}]}"#,
        )
        .expect("json");
        let mut text = String::new();
        c.text_into(&mut text);
        assert_eq!(text, "get_weather{\"city\":");
        let m = AnswerView::parse(
            br#"{"choices":[{"message":{"content":null,"refusal":"no","reasoning":"why","function_call":{"name":"f","arguments":"{}"}}}]}"#,
        )
        .expect("json");
        let mut text = String::new();
        m.text_into(&mut text);
        assert_eq!(text, "whynof{}");
    }
}
