//! Anthropic's Messages API beside OpenAI's chat completions: pure conversions in both
//! directions (requests, answers, SSE streams, usage, errors), with no IO.
//!
//! * A `/v1/messages` call routed to an OpenAI-style channel: [`messages_request_to_chat`],
//!   then [`chat_response_to_messages`] or, for streams, [`ChunksToEvents`].
//! * A `/v1/chat/completions` call routed to an `anthropic` channel:
//!   [`chat_request_to_messages`], then [`messages_response_to_chat`] or [`EventsToChunks`].
//! * Billing of Anthropic answers: [`reported_usage`] (one `usage` object) and [`StreamUsage`]
//!   (a stream's events), plus the generated text for the tokenizer fallback
//!   ([`message_text_into`], [`event_text_into`]).
//! * Errors: [`error_body`], [`openai_error_to_anthropic`], [`anthropic_error_to_openai`].
//!
//! Fields one side has and the other has not are dropped rather than forwarded, because both
//! APIs reject parameters they do not know: Anthropic's `top_k`, `thinking`, server tools and
//! `cache_control`; OpenAI's `response_format`, `logprobs`, `seed`, penalties and the like.
//! Display numbers (the usage a client is shown) read hostile counts as 0; billing reads them
//! through [`reported_usage`], which keeps them [`Reported::Invalid`].

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tollgate_domain::billing::{Reported, ReportedUsage};

use crate::wire::LIMIT_FIELDS;

/// A request that cannot be converted; the message is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

fn invalid(msg: impl Into<String>) -> InvalidRequest {
    InvalidRequest(msg.into())
}

/// One Anthropic SSE event: its name (the `event:` line) and its data.
pub type AnthropicEvent = (&'static str, Value);

/// The `id` given to a converted message when the upstream answer carried none.
pub const FALLBACK_MESSAGE_ID: &str = "msg_tollgate";

// ---------------------------------------------------------------------------------------------
// Small readers.

/// A count as reported: absent (missing or `null`), a whole non-negative 64-bit number, or
/// anything else (negative, fractional, too large, not a number), which is invalid.
fn count_of(v: Option<&Value>) -> Reported {
    match v {
        None | Some(Value::Null) => Reported::Absent,
        Some(Value::Number(n)) => n.as_u64().map_or(Reported::Invalid, Reported::Count),
        Some(_) => Reported::Invalid,
    }
}

/// A count to show a client: hostile values show as 0 (billing reads them separately).
fn shown(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).unwrap_or(0)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// A required string field of a block.
fn required_str<'a>(
    block: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a str, InvalidRequest> {
    match block.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(invalid(format!("{path}.{key}: field required"))),
        Some(_) => Err(invalid(format!("{path}.{key}: must be a string"))),
    }
}

/// A content block: an object with a string `type`.
fn block_of<'a>(
    v: &'a Value,
    path: &str,
) -> Result<(&'a Map<String, Value>, &'a str), InvalidRequest> {
    let Value::Object(b) = v else {
        return Err(invalid(format!("{path}: must be an object")));
    };
    let kind = required_str(b, "type", path)?;
    Ok((b, kind))
}

// ---------------------------------------------------------------------------------------------
// Stop reasons and usage.

/// OpenAI's `finish_reason` as an Anthropic `stop_reason`. OpenAI does not say whether `stop`
/// came from a stop sequence, so it is always `end_turn`.
#[must_use]
pub fn stop_reason_for(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's `stop_reason` as an OpenAI `finish_reason`.
#[must_use]
pub fn finish_reason_for(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything new.
        _ => "stop",
    }
}

/// The cached prompt tokens of an OpenAI `usage`, in OpenAI's or DeepSeek's spelling.
fn chat_cached(usage: &Value) -> u64 {
    usage
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64)
        .or_else(|| usage.get("prompt_cache_hit_tokens").and_then(Value::as_u64))
        .unwrap_or(0)
}

/// An OpenAI `usage` as Anthropic's, for display. OpenAI's `prompt_tokens` include cached
/// tokens while Anthropic's `input_tokens` exclude cache reads, so `input_tokens` is the
/// prompt minus the cached count and `cache_read_input_tokens` the cached count. OpenAI has
/// no cache writes: `cache_creation_input_tokens` is 0.
#[must_use]
pub fn chat_usage_to_anthropic(usage: &Value) -> Value {
    let prompt = shown(usage.get("prompt_tokens"));
    let cached = chat_cached(usage).min(prompt);
    json!({
        "input_tokens": prompt - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": shown(usage.get("completion_tokens")),
    })
}

/// An Anthropic `usage` as OpenAI's, for display: the prompt is every input token (fresh,
/// cache reads and cache writes), of which cache reads are the cached ones.
#[must_use]
pub fn anthropic_usage_to_chat(usage: &Value) -> Value {
    let cache_read = shown(usage.get("cache_read_input_tokens"));
    let prompt = shown(usage.get("input_tokens"))
        .saturating_add(cache_read)
        .saturating_add(shown(usage.get("cache_creation_input_tokens")));
    let completion = shown(usage.get("output_tokens"));
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
        "prompt_tokens_details": {"cached_tokens": cache_read},
    })
}

/// Adds input counts; absent cache fields count as 0, an invalid one makes the sum invalid.
fn prompt_sum(input: Reported, cache_read: Reported, cache_creation: Reported) -> Reported {
    let Reported::Count(mut sum) = input else {
        // Without the main count there is no prompt to bill: Tollgate counts it itself.
        return input;
    };
    for part in [cache_read, cache_creation] {
        match part {
            Reported::Absent => {}
            Reported::Invalid => return Reported::Invalid,
            Reported::Count(n) => match sum.checked_add(n) {
                Some(s) => sum = s,
                None => return Reported::Invalid,
            },
        }
    }
    Reported::Count(sum)
}

/// An Anthropic `usage` object as reported, for billing: prompt = `input_tokens` +
/// `cache_read_input_tokens` + `cache_creation_input_tokens` (Anthropic's `input_tokens`
/// excludes both), cached = `cache_read_input_tokens` (cache writes bill at the input price),
/// completion = `output_tokens`. Absent fields stay absent (an absent `input_tokens` makes the
/// prompt absent); hostile numbers are [`Reported::Invalid`], as in [`crate::wire::WireCount`].
#[must_use]
pub fn reported_usage(usage: &Value) -> ReportedUsage {
    let cache_read = count_of(usage.get("cache_read_input_tokens"));
    ReportedUsage {
        prompt: prompt_sum(
            count_of(usage.get("input_tokens")),
            cache_read,
            count_of(usage.get("cache_creation_input_tokens")),
        ),
        completion: count_of(usage.get("output_tokens")),
        cached: cache_read,
    }
}

/// The usage of an Anthropic stream, gathered from its events for billing.
///
/// `message_start` carries the input counts; its `output_tokens` is a placeholder (usually 1)
/// and is ignored, so a stream cut before `message_delta` reports no completion count and is
/// billed from the text delivered. `message_delta` carries the final `output_tokens` (a
/// running total) and may repeat the input counts, which then win.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamUsage {
    input: Reported,
    cache_read: Reported,
    cache_creation: Reported,
    output: Reported,
}

impl StreamUsage {
    /// Reads the usage of one event's data (other events change nothing).
    pub fn observe(&mut self, event: &Value) {
        let (usage, with_output) = match str_of(event, "type") {
            Some("message_start") => (event.get("message").and_then(|m| m.get("usage")), false),
            Some("message_delta") => (event.get("usage"), true),
            _ => return,
        };
        let Some(usage) = usage else { return };
        let take = |slot: &mut Reported, key: &str| match count_of(usage.get(key)) {
            Reported::Absent => {}
            r => *slot = r,
        };
        take(&mut self.input, "input_tokens");
        take(&mut self.cache_read, "cache_read_input_tokens");
        take(&mut self.cache_creation, "cache_creation_input_tokens");
        if with_output {
            take(&mut self.output, "output_tokens");
        }
    }

    /// The usage as reported so far (see [`reported_usage`] for the arithmetic).
    #[must_use]
    pub fn reported(&self) -> ReportedUsage {
        ReportedUsage {
            prompt: prompt_sum(self.input, self.cache_read, self.cache_creation),
            completion: self.output,
            cached: self.cache_read,
        }
    }

    /// Whether any usage was seen at all.
    #[must_use]
    pub fn seen(&self) -> bool {
        *self != StreamUsage::default()
    }

    /// The usage gathered so far as an OpenAI `usage` object, when both the prompt and the
    /// completion counts are known and well formed.
    fn as_chat(&self) -> Option<Value> {
        let r = self.reported();
        let (Reported::Count(prompt), Reported::Count(completion)) = (r.prompt, r.completion)
        else {
            return None;
        };
        let cached = match r.cached {
            Reported::Count(n) => n,
            _ => 0,
        };
        Some(json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt.saturating_add(completion),
            "prompt_tokens_details": {"cached_tokens": cached},
        }))
    }
}

/// Appends the generated text of an Anthropic message (text, thinking, tool names and
/// inputs) to `out`, for counting when its usage cannot be believed.
pub fn message_text_into(message: &Value, out: &mut String) {
    for block in message
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match str_of(block, "type") {
            Some("text") => out.push_str(str_of(block, "text").unwrap_or_default()),
            Some("thinking") => out.push_str(str_of(block, "thinking").unwrap_or_default()),
            Some("tool_use") => {
                out.push_str(str_of(block, "name").unwrap_or_default());
                if let Some(input) = block.get("input") {
                    out.push_str(&input.to_string());
                }
            }
            _ => {}
        }
    }
}

/// Appends the generated text one Anthropic stream event carries (text, thinking and tool
/// input deltas, tool names) to `out`.
pub fn event_text_into(event: &Value, out: &mut String) {
    match str_of(event, "type") {
        Some("content_block_start") => {
            let block = event.get("content_block").unwrap_or(&Value::Null);
            for key in ["text", "thinking", "name"] {
                out.push_str(str_of(block, key).unwrap_or_default());
            }
        }
        Some("content_block_delta") => {
            let delta = event.get("delta").unwrap_or(&Value::Null);
            for key in ["text", "thinking", "partial_json"] {
                out.push_str(str_of(delta, key).unwrap_or_default());
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Requests: Anthropic → OpenAI.

/// An Anthropic Messages request as an OpenAI chat-completions request.
///
/// `system` becomes the first message; `tool_result` blocks become `role: "tool"` messages
/// placed before the rest of their user message (an `is_error` result is prefixed `Error: `,
/// and images inside a result join the user message, since tool messages carry text only);
/// `tool_use` blocks become `tool_calls`; `thinking` blocks are dropped (chat completions take
/// no reasoning as input). A user message whose blocks are all text becomes one string (joined
/// by `\n`), since several providers accept only strings; otherwise it is a list of parts.
/// Streams ask for usage (`stream_options.include_usage`), which billing needs.
pub fn messages_request_to_chat(request: &Value) -> Result<Value, InvalidRequest> {
    let Value::Object(req) = request else {
        return Err(invalid("request body must be a JSON object"));
    };
    let model = match req.get("model") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None | Some(Value::Null) => return Err(invalid("model: field required")),
        Some(_) => return Err(invalid("model: must be a non-empty string")),
    };
    let max_tokens = match req.get("max_tokens") {
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| invalid("max_tokens: must be an integer of at least 1"))?,
        None | Some(Value::Null) => return Err(invalid("max_tokens: field required")),
        Some(_) => return Err(invalid("max_tokens: must be an integer")),
    };
    let list = match req.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(invalid("messages: at least one message is required")),
        None | Some(Value::Null) => return Err(invalid("messages: field required")),
        Some(_) => return Err(invalid("messages: must be an array")),
    };

    let mut messages = Vec::new();
    if let Some(system) = system_text(req.get("system"))? {
        messages.push(json!({"role": "system", "content": system}));
    }
    for (i, m) in list.iter().enumerate() {
        convert_message(i, m, &mut messages)?;
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model));
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), json!(max_tokens));
    for key in ["temperature", "top_p"] {
        match req.get(key) {
            None | Some(Value::Null) => {}
            Some(v @ Value::Number(_)) => {
                out.insert(key.into(), v.clone());
            }
            Some(_) => return Err(invalid(format!("{key}: must be a number"))),
        }
    }
    match req.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(seqs)) => {
            if seqs.iter().any(|s| !s.is_string()) {
                return Err(invalid("stop_sequences: must be an array of strings"));
            }
            if !seqs.is_empty() {
                out.insert("stop".into(), Value::Array(seqs.clone()));
            }
        }
        Some(_) => return Err(invalid("stop_sequences: must be an array of strings")),
    }
    match req.get("stream") {
        None | Some(Value::Null | Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            out.insert("stream".into(), Value::Bool(true));
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Some(_) => return Err(invalid("stream: must be a boolean")),
    }
    match req.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(meta)) => match meta.get("user_id") {
            None | Some(Value::Null) => {}
            Some(Value::String(u)) => {
                out.insert("user".into(), Value::String(u.clone()));
            }
            Some(_) => return Err(invalid("metadata.user_id: must be a string")),
        },
        Some(_) => return Err(invalid("metadata: must be an object")),
    }
    let tools = tools_to_chat(req.get("tools"))?;
    let choice = tool_choice_to_chat(req.get("tool_choice"))?;
    // OpenAI rejects tool_choice and parallel_tool_calls without tools.
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some((choice, parallel)) = choice {
            out.insert("tool_choice".into(), choice);
            if !parallel {
                out.insert("parallel_tool_calls".into(), Value::Bool(false));
            }
        }
    }
    Ok(Value::Object(out))
}

/// `system` as one string (text blocks joined by `\n`), or `None` when empty.
fn system_text(system: Option<&Value>) -> Result<Option<String>, InvalidRequest> {
    let text = match system {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let path = format!("system.{j}");
                let (b, kind) = block_of(b, &path)?;
                if kind != "text" {
                    return Err(invalid(format!(
                        "{path}.type: system blocks must be text, not `{kind}`"
                    )));
                }
                texts.push(required_str(b, "text", &path)?);
            }
            texts.join("\n")
        }
        Some(_) => {
            return Err(invalid(
                "system: must be a string or an array of text blocks",
            ));
        }
    };
    Ok((!text.is_empty()).then_some(text))
}

fn convert_message(i: usize, m: &Value, out: &mut Vec<Value>) -> Result<(), InvalidRequest> {
    let path = format!("messages.{i}");
    let Value::Object(m) = m else {
        return Err(invalid(format!("{path}: must be an object")));
    };
    let role = required_str(m, "role", &path)?;
    let content = match m.get("content") {
        None | Some(Value::Null) => return Err(invalid(format!("{path}.content: field required"))),
        Some(c) => c,
    };
    match (role, content) {
        ("user" | "assistant", Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            Ok(())
        }
        ("user", Value::Array(blocks)) => user_blocks(&path, blocks, out),
        ("assistant", Value::Array(blocks)) => assistant_blocks(&path, blocks, out),
        ("user" | "assistant", _) => Err(invalid(format!(
            "{path}.content: must be a string or an array of content blocks"
        ))),
        _ => Err(invalid(format!(
            "{path}.role: must be \"user\" or \"assistant\""
        ))),
    }
}

fn user_blocks(path: &str, blocks: &[Value], out: &mut Vec<Value>) -> Result<(), InvalidRequest> {
    if blocks.is_empty() {
        return Err(invalid(format!("{path}.content: must not be empty")));
    }
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let path = format!("{path}.content.{j}");
        let (b, kind) = block_of(b, &path)?;
        match kind {
            "text" => parts.push(json!({"type": "text", "text": required_str(b, "text", &path)?})),
            "image" => parts.push(image_part(b, &path)?),
            "document" => parts.push(document_part(b, &path)?),
            // Tool messages go out as they come, so they precede the rest of this message.
            "tool_result" => out.push(tool_result_message(b, &path, &mut parts)?),
            "tool_use" | "thinking" | "redacted_thinking" => {
                return Err(invalid(format!(
                    "{path}.type: `{kind}` blocks are only allowed in assistant messages"
                )));
            }
            other => {
                return Err(invalid(format!(
                    "{path}.type: unsupported content block type `{other}`"
                )));
            }
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    let content = if parts.iter().all(|p| p["type"] == "text") {
        let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        Value::String(texts.join("\n"))
    } else {
        Value::Array(parts)
    };
    out.push(json!({"role": "user", "content": content}));
    Ok(())
}

fn assistant_blocks(
    path: &str,
    blocks: &[Value],
    out: &mut Vec<Value>,
) -> Result<(), InvalidRequest> {
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let path = format!("{path}.content.{j}");
        let (b, kind) = block_of(b, &path)?;
        match kind {
            "text" => texts.push(required_str(b, "text", &path)?),
            "tool_use" => {
                let input = match b.get("input") {
                    None | Some(Value::Null) => Value::Object(Map::new()),
                    Some(v @ Value::Object(_)) => v.clone(),
                    Some(_) => return Err(invalid(format!("{path}.input: must be an object"))),
                };
                calls.push(json!({
                    "id": required_str(b, "id", &path)?,
                    "type": "function",
                    "function": {
                        "name": required_str(b, "name", &path)?,
                        "arguments": input.to_string(),
                    },
                }));
            }
            // Chat completions take no reasoning as input (DeepSeek rejects it).
            "thinking" | "redacted_thinking" => {}
            "image" | "document" | "tool_result" => {
                return Err(invalid(format!(
                    "{path}.type: `{kind}` blocks are only allowed in user messages"
                )));
            }
            other => {
                return Err(invalid(format!(
                    "{path}.type: unsupported content block type `{other}`"
                )));
            }
        }
    }
    if texts.is_empty() && calls.is_empty() {
        // Only reasoning: an empty assistant turn would upset providers more than none.
        return Ok(());
    }
    let mut msg = Map::new();
    msg.insert("role".into(), json!("assistant"));
    msg.insert(
        "content".into(),
        if texts.is_empty() {
            Value::Null
        } else {
            Value::String(texts.join("\n"))
        },
    );
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    out.push(Value::Object(msg));
    Ok(())
}

fn image_part(b: &Map<String, Value>, path: &str) -> Result<Value, InvalidRequest> {
    let source = match b.get("source") {
        Some(Value::Object(s)) => s,
        None | Some(Value::Null) => return Err(invalid(format!("{path}.source: field required"))),
        Some(_) => return Err(invalid(format!("{path}.source: must be an object"))),
    };
    let spath = format!("{path}.source");
    let url = match required_str(source, "type", &spath)? {
        "base64" => format!(
            "data:{};base64,{}",
            required_str(source, "media_type", &spath)?,
            required_str(source, "data", &spath)?
        ),
        "url" => required_str(source, "url", &spath)?.to_owned(),
        other => {
            return Err(invalid(format!(
                "{spath}.type: image source `{other}` is not supported for this model"
            )));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A `document` block: plain text becomes text; a base64 PDF becomes OpenAI's `file` part.
fn document_part(b: &Map<String, Value>, path: &str) -> Result<Value, InvalidRequest> {
    let Some(Value::Object(source)) = b.get("source") else {
        return Err(invalid(format!("{path}.source: must be an object")));
    };
    let spath = format!("{path}.source");
    match required_str(source, "type", &spath)? {
        "text" => Ok(json!({"type": "text", "text": required_str(source, "data", &spath)?})),
        "base64" => {
            let media = required_str(source, "media_type", &spath)?;
            let filename = match b.get("title") {
                Some(Value::String(t)) if !t.is_empty() => t.clone(),
                _ => "document.pdf".to_owned(),
            };
            Ok(json!({"type": "file", "file": {
                "filename": filename,
                "file_data": format!("data:{media};base64,{}", required_str(source, "data", &spath)?),
            }}))
        }
        other => Err(invalid(format!(
            "{spath}.type: document source `{other}` is not supported for this model"
        ))),
    }
}

/// A `tool_result` block as a `tool` message; images inside it are added to `parts` (the rest
/// of the user message).
fn tool_result_message(
    b: &Map<String, Value>,
    path: &str,
    parts: &mut Vec<Value>,
) -> Result<Value, InvalidRequest> {
    let id = required_str(b, "tool_use_id", path)?;
    let mut text = match b.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::new();
            for (k, inner) in blocks.iter().enumerate() {
                let ipath = format!("{path}.content.{k}");
                let (inner, kind) = block_of(inner, &ipath)?;
                match kind {
                    "text" => texts.push(required_str(inner, "text", &ipath)?),
                    "image" => parts.push(image_part(inner, &ipath)?),
                    other => {
                        return Err(invalid(format!(
                            "{ipath}.type: `{other}` blocks are not supported in tool results"
                        )));
                    }
                }
            }
            texts.join("\n")
        }
        Some(_) => {
            return Err(invalid(format!(
                "{path}.content: must be a string or an array of content blocks"
            )));
        }
    };
    match b.get("is_error") {
        None | Some(Value::Null | Value::Bool(false)) => {}
        // OpenAI has no error flag on tool messages; the model still needs to know.
        Some(Value::Bool(true)) => text = format!("Error: {text}"),
        Some(_) => return Err(invalid(format!("{path}.is_error: must be a boolean"))),
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

fn tools_to_chat(tools: Option<&Value>) -> Result<Vec<Value>, InvalidRequest> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(invalid("tools: must be an array")),
    };
    let mut out = Vec::with_capacity(tools.len());
    for (k, t) in tools.iter().enumerate() {
        let path = format!("tools.{k}");
        let Value::Object(t) = t else {
            return Err(invalid(format!("{path}: must be an object")));
        };
        match t.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "custom" => {}
            // Server tools (web search, code execution, …) run only on Anthropic's side.
            Some(other) => {
                return Err(invalid(format!(
                    "{path}.type: tool type {other} is not supported for this model"
                )));
            }
        }
        let name = required_str(t, "name", &path)?;
        let schema = match t.get("input_schema") {
            Some(v @ Value::Object(_)) => v.clone(),
            None | Some(Value::Null) => {
                return Err(invalid(format!("{path}.input_schema: field required")));
            }
            Some(_) => return Err(invalid(format!("{path}.input_schema: must be an object"))),
        };
        let mut function = Map::new();
        function.insert("name".into(), json!(name));
        match t.get("description") {
            None | Some(Value::Null) => {}
            Some(Value::String(d)) => {
                function.insert("description".into(), json!(d));
            }
            Some(_) => return Err(invalid(format!("{path}.description: must be a string"))),
        }
        function.insert("parameters".into(), schema);
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

/// `tool_choice` as OpenAI's and whether parallel calls stay allowed (`None` when absent).
fn tool_choice_to_chat(choice: Option<&Value>) -> Result<Option<(Value, bool)>, InvalidRequest> {
    let c = match choice {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(c)) => c,
        Some(_) => return Err(invalid("tool_choice: must be an object")),
    };
    let mapped = match required_str(c, "type", "tool_choice")? {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            json!({"type": "function", "function": {"name": required_str(c, "name", "tool_choice")?}})
        }
        other => {
            return Err(invalid(format!(
                "tool_choice.type: unknown tool choice `{other}`"
            )));
        }
    };
    let parallel = match c.get("disable_parallel_tool_use") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => !b,
        Some(_) => {
            return Err(invalid(
                "tool_choice.disable_parallel_tool_use: must be a boolean",
            ));
        }
    };
    Ok(Some((mapped, parallel)))
}

// ---------------------------------------------------------------------------------------------
// Answers: OpenAI → Anthropic.

/// Tool arguments as an Anthropic `input` object: empty text is `{}`; text that is not a JSON
/// object (a model's broken output) is kept whole as `{"raw": text}` rather than lost.
fn input_from_arguments(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"raw": arguments}),
    }
}

/// The text of an OpenAI `content`: a string, or the text of its parts.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// A non-stream OpenAI chat completion as an Anthropic message. Only the first choice is
/// converted (a message has one). Reasoning (`reasoning_content` or `reasoning`) becomes a
/// `thinking` block with an empty signature; content and a refusal become text blocks; tool
/// calls (and a legacy `function_call`) become `tool_use` blocks whose `input` is the parsed
/// arguments (`{"raw": text}` when they are not a JSON object). `model` and `id` are the
/// answer's. Usage: see [`chat_usage_to_anthropic`] (all 0 when the answer has none).
#[must_use]
pub fn chat_response_to_messages(response: &Value) -> Value {
    let choice = response
        .get("choices")
        .and_then(|c| c.get(0))
        .unwrap_or(&Value::Null);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    let reasoning = non_empty(str_of(message, "reasoning_content"))
        .or_else(|| non_empty(str_of(message, "reasoning")));
    if let Some(r) = reasoning {
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    let text = content_text(message.get("content"));
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    if let Some(r) = non_empty(str_of(message, "refusal")) {
        content.push(json!({"type": "text", "text": r}));
    }
    for (k, call) in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let f = call.get("function").unwrap_or(&Value::Null);
        content.push(json!({
            "type": "tool_use",
            "id": str_of(call, "id").map_or_else(|| format!("call_{k}"), str::to_owned),
            "name": str_of(f, "name").unwrap_or_default(),
            "input": input_from_arguments(str_of(f, "arguments").unwrap_or_default()),
        }));
    }
    if let Some(f) = message.get("function_call").filter(|f| f.is_object()) {
        content.push(json!({
            "type": "tool_use",
            "id": "call_function",
            "name": str_of(f, "name").unwrap_or_default(),
            "input": input_from_arguments(str_of(f, "arguments").unwrap_or_default()),
        }));
    }
    let usage = response.get("usage").unwrap_or(&Value::Null);
    json!({
        "id": str_of(response, "id").unwrap_or(FALLBACK_MESSAGE_ID),
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": str_of(response, "model").unwrap_or_default(),
        "stop_reason": stop_reason_for(str_of(choice, "finish_reason")),
        "stop_sequence": null,
        "usage": chat_usage_to_anthropic(usage),
    })
}

/// The content block a [`ChunksToEvents`] has open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text,
    Thinking,
    /// A tool call, by its OpenAI `index` (`u64::MAX` for a legacy `function_call`).
    Tool(u64),
}

/// Turns OpenAI `chat.completion.chunk` values into Anthropic's stream events, in Anthropic's
/// order:
///
/// 1. `message_start` (at the first chunk; `usage.input_tokens` 0 unless that chunk carries
///    usage),
/// 2. per content block: `content_block_start`, `content_block_delta`s (`thinking_delta` for
///    reasoning, `text_delta` for content and refusals, `input_json_delta` for tool
///    arguments), `content_block_stop` — a new block starts whenever the kind changes or
///    another tool call begins; the open block is closed at `finish_reason`,
/// 3. at [`ChunksToEvents::finish`] (call it when the upstream stream ends, `[DONE]` or not):
///    `message_delta` with the stop reason and the usage (the last usage seen, so a usage
///    chunk after the `finish_reason` chunk counts; `output_tokens` 0 when none came), then
///    `message_stop`.
///
/// Only choice 0 is converted. A chunk carrying `error` becomes an `error` event and ends the
/// stream. Tool calls are expected one after the other, as providers send them; arguments
/// for a call whose block was closed start a new block.
#[derive(Debug, Default)]
pub struct ChunksToEvents {
    started: bool,
    finished: bool,
    next_index: u64,
    open: Option<OpenBlock>,
    stop_reason: Option<&'static str>,
    usage: Option<Value>,
}

impl ChunksToEvents {
    /// A converter for one stream.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The events for one chunk (the data of one SSE event, parsed).
    pub fn push(&mut self, chunk: &Value) -> Vec<AnthropicEvent> {
        let mut events = Vec::new();
        if self.finished {
            return events;
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        if !self.started {
            self.start(chunk, &mut events);
        }
        if let Some(err) = chunk.get("error").filter(|e| !e.is_null()) {
            self.close(&mut events);
            let body = openai_error_to_anthropic(500, &json!({"error": err}));
            events.push(("error", body));
            self.finished = true;
            return events;
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter()
                    .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
            });
        let Some(choice) = choice else {
            return events;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        let reasoning = non_empty(str_of(delta, "reasoning_content"))
            .or_else(|| non_empty(str_of(delta, "reasoning")));
        if let Some(r) = reasoning {
            self.ensure(OpenBlock::Thinking, None, &mut events);
            self.delta(
                json!({"type": "thinking_delta", "thinking": r}),
                &mut events,
            );
        }
        for text in [
            content_text(delta.get("content")),
            str_of(delta, "refusal").unwrap_or_default().to_owned(),
        ] {
            if !text.is_empty() {
                self.ensure(OpenBlock::Text, None, &mut events);
                self.delta(json!({"type": "text_delta", "text": text}), &mut events);
            }
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            self.tool_delta(index, call, &mut events);
        }
        if let Some(f) = delta.get("function_call").filter(|f| f.is_object()) {
            let call = json!({"id": "call_function", "function": f});
            self.tool_delta(u64::MAX, &call, &mut events);
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = Some(stop_reason_for(Some(reason)));
            self.close(&mut events);
        }
        events
    }

    /// The closing events: call when the upstream stream ended (with or without `[DONE]`).
    /// A stream that never started still gets a well-formed (empty) message. A second call
    /// returns nothing.
    pub fn finish(&mut self) -> Vec<AnthropicEvent> {
        let mut events = Vec::new();
        if self.finished {
            return events;
        }
        if !self.started {
            self.start(&Value::Null, &mut events);
        }
        self.close(&mut events);
        let usage = match &self.usage {
            Some(u) => chat_usage_to_anthropic(u),
            None => json!({"output_tokens": 0}),
        };
        events.push((
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": usage,
            }),
        ));
        events.push(("message_stop", json!({"type": "message_stop"})));
        self.finished = true;
        events
    }

    fn start(&mut self, chunk: &Value, events: &mut Vec<AnthropicEvent>) {
        self.started = true;
        let mut usage = match &self.usage {
            Some(u) => chat_usage_to_anthropic(u),
            None => chat_usage_to_anthropic(&Value::Null),
        };
        // Output is only final in message_delta.
        usage["output_tokens"] = json!(0);
        events.push((
            "message_start",
            json!({"type": "message_start", "message": {
                "id": str_of(chunk, "id").unwrap_or(FALLBACK_MESSAGE_ID),
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": str_of(chunk, "model").unwrap_or_default(),
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage,
            }}),
        ));
    }

    fn tool_delta(&mut self, index: u64, call: &Value, events: &mut Vec<AnthropicEvent>) {
        let f = call.get("function").unwrap_or(&Value::Null);
        if self.open != Some(OpenBlock::Tool(index)) {
            let id = str_of(call, "id").map_or_else(|| format!("call_{index}"), str::to_owned);
            let block = json!({"type": "tool_use", "id": id,
                               "name": str_of(f, "name").unwrap_or_default(), "input": {}});
            self.ensure(OpenBlock::Tool(index), Some(block), events);
        }
        if let Some(args) = non_empty(str_of(f, "arguments")) {
            self.delta(
                json!({"type": "input_json_delta", "partial_json": args}),
                events,
            );
        }
    }

    /// Opens a block of `kind` unless it is the one open (closing any other first).
    fn ensure(&mut self, kind: OpenBlock, block: Option<Value>, events: &mut Vec<AnthropicEvent>) {
        if self.open == Some(kind) {
            return;
        }
        self.close(events);
        let block = block.unwrap_or_else(|| match kind {
            OpenBlock::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            _ => json!({"type": "text", "text": ""}),
        });
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": self.next_index, "content_block": block}),
        ));
        self.open = Some(kind);
    }

    fn delta(&self, delta: Value, events: &mut Vec<AnthropicEvent>) {
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": self.next_index, "delta": delta}),
        ));
    }

    fn close(&mut self, events: &mut Vec<AnthropicEvent>) {
        if self.open.take().is_some() {
            events.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": self.next_index}),
            ));
            self.next_index += 1;
        }
    }
}

/// One Anthropic event as SSE bytes: `event: <name>\ndata: <json>\n\n`.
#[must_use]
pub fn sse_event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// One OpenAI chunk as SSE bytes: `data: <json>\n\n`.
#[must_use]
pub fn sse_data(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

// ---------------------------------------------------------------------------------------------
// Requests: OpenAI → Anthropic.

/// An OpenAI chat-completions request (as [`crate::wire::ChatRequest::body`] holds it) as an
/// Anthropic Messages request.
///
/// `system` and `developer` messages (wherever they are) join `system` (by `\n`); `tool`
/// messages become `tool_result` blocks in a user turn; `tool_calls` become `tool_use` blocks
/// (arguments that are not a JSON object are kept as `{"raw": text}`); images (data URLs or
/// links) and base64 PDF `file` parts become `image` and `document` blocks. Consecutive turns
/// of one role are merged, so tool results and the user's next words share one turn, results
/// first. Empty or whitespace-only text is left out (Anthropic rejects it). `max_tokens` is
/// the largest completion limit set under any spelling ([`LIMIT_FIELDS`]), else
/// `default_max_tokens` (Anthropic requires one). `temperature` above 1 is lowered to 1,
/// Anthropic's maximum. `stop` → `stop_sequences`, `user` → `metadata.user_id`;
/// `parallel_tool_calls: false` → `disable_parallel_tool_use`. `n` above 1 is refused.
pub fn chat_request_to_messages(
    body: &Map<String, Value>,
    default_max_tokens: u64,
) -> Result<Value, InvalidRequest> {
    let model = match body.get("model") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(invalid("you must provide a model parameter")),
    };
    let Some(Value::Array(list)) = body.get("messages") else {
        return Err(invalid("you must provide messages"));
    };
    if body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(invalid("n greater than 1 is not supported for this model"));
    }
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let path = format!("messages[{i}]");
        let role = str_of(m, "role").unwrap_or_default();
        let (role, blocks) = match role {
            "system" | "developer" => {
                let text = content_text(m.get("content"));
                if !text.trim().is_empty() {
                    system.push(text);
                }
                continue;
            }
            "user" => ("user", parts_to_blocks(m.get("content"), &path)?),
            "assistant" => ("assistant", assistant_to_blocks(m, &path)?),
            "tool" => {
                let Some(id) = str_of(m, "tool_call_id") else {
                    return Err(invalid(format!("{path}.tool_call_id: field required")));
                };
                let block = json!({"type": "tool_result", "tool_use_id": id,
                                   "content": content_text(m.get("content"))});
                ("user", vec![block])
            }
            "function" => {
                return Err(invalid(format!(
                    "{path}.role: function messages are not supported for this model; use tools"
                )));
            }
            other => return Err(invalid(format!("{path}.role: unknown role `{other}`"))),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    if turns.is_empty() {
        return Err(invalid(
            "messages must include at least one non-empty user or assistant message",
        ));
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model));
    let limit = LIMIT_FIELDS
        .iter()
        .filter_map(|f| body.get(*f).and_then(Value::as_u64))
        .max()
        .unwrap_or(default_max_tokens);
    out.insert("max_tokens".into(), json!(limit));
    out.insert(
        "messages".into(),
        Value::Array(
            turns
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n")));
    }
    if let Some(t) = body.get("temperature").filter(|t| t.is_number()) {
        // A temperature, not money: f64 is fine here.
        let above = t.as_f64().is_some_and(|v| v > 1.0);
        out.insert(
            "temperature".into(),
            if above { json!(1) } else { t.clone() },
        );
    }
    if let Some(p) = body.get("top_p").filter(|p| p.is_number()) {
        out.insert("top_p".into(), p.clone());
    }
    match body.get("stop") {
        Some(Value::String(s)) if !s.is_empty() => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(seqs)) if !seqs.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(seqs.clone()));
        }
        _ => {}
    }
    if body.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), Value::Bool(true));
    }
    if let Some(user) = non_empty(body.get("user").and_then(Value::as_str)) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    let tools = chat_tools_to_messages(body.get("tools"))?;
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        let mut choice = chat_tool_choice_to_messages(body.get("tool_choice"))?;
        if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
            let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if let Value::Object(c) = c {
                c.insert("disable_parallel_tool_use".into(), Value::Bool(true));
            }
        }
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
    }
    Ok(Value::Object(out))
}

/// OpenAI content (a string or parts) as Anthropic blocks.
fn parts_to_blocks(content: Option<&Value>, path: &str) -> Result<Vec<Value>, InvalidRequest> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(text_block(s).into_iter().collect()),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(invalid(format!(
                "{path}.content: must be a string or an array of parts"
            )));
        }
    };
    let mut blocks = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let ppath = format!("{path}.content[{j}]");
        match str_of(part, "type") {
            Some("text") => blocks.extend(text_block(str_of(part, "text").unwrap_or_default())),
            Some("refusal") => {
                blocks.extend(text_block(str_of(part, "refusal").unwrap_or_default()));
            }
            Some("image_url") => {
                let url = match part.get("image_url") {
                    Some(Value::String(u)) => Some(u.as_str()),
                    Some(obj) => str_of(obj, "url"),
                    None => None,
                };
                let Some(url) = url else {
                    return Err(invalid(format!("{ppath}.image_url.url: field required")));
                };
                blocks.push(json!({"type": "image", "source": url_source(url)}));
            }
            Some("file") => {
                let file = part.get("file").unwrap_or(&Value::Null);
                let Some(data) = str_of(file, "file_data") else {
                    return Err(invalid(format!(
                        "{ppath}.file: only inline file_data is supported for this model"
                    )));
                };
                let mut doc = json!({"type": "document", "source": url_source(data)});
                if let Some(name) = non_empty(str_of(file, "filename")) {
                    doc["title"] = json!(name);
                }
                blocks.push(doc);
            }
            Some(other) => {
                return Err(invalid(format!(
                    "{ppath}.type: content part `{other}` is not supported for this model"
                )));
            }
            None => return Err(invalid(format!("{ppath}.type: field required"))),
        }
    }
    Ok(blocks)
}

fn text_block(text: &str) -> Option<Value> {
    (!text.trim().is_empty()).then(|| json!({"type": "text", "text": text}))
}

/// A data URL as a base64 source, anything else as a URL source.
fn url_source(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media, data)) = rest.split_once(";base64,")
    {
        return json!({"type": "base64", "media_type": media, "data": data});
    }
    json!({"type": "url", "url": url})
}

fn assistant_to_blocks(m: &Value, path: &str) -> Result<Vec<Value>, InvalidRequest> {
    let mut blocks = parts_to_blocks(m.get("content"), path)?;
    if let Some(r) = non_empty(str_of(m, "refusal")) {
        blocks.extend(text_block(r));
    }
    for (k, call) in m
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let f = call.get("function").unwrap_or(&Value::Null);
        let Some(name) = str_of(f, "name") else {
            return Err(invalid(format!(
                "{path}.tool_calls[{k}].function.name: field required"
            )));
        };
        let Some(id) = str_of(call, "id") else {
            return Err(invalid(format!(
                "{path}.tool_calls[{k}].id: field required"
            )));
        };
        blocks.push(json!({"type": "tool_use", "id": id, "name": name,
                           "input": input_from_arguments(str_of(f, "arguments").unwrap_or_default())}));
    }
    if let Some(f) = m.get("function_call").filter(|f| f.is_object()) {
        blocks.push(json!({"type": "tool_use", "id": "call_function",
                           "name": str_of(f, "name").unwrap_or_default(),
                           "input": input_from_arguments(str_of(f, "arguments").unwrap_or_default())}));
    }
    Ok(blocks)
}

fn chat_tools_to_messages(tools: Option<&Value>) -> Result<Vec<Value>, InvalidRequest> {
    let Some(Value::Array(tools)) = tools else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(tools.len());
    for (k, t) in tools.iter().enumerate() {
        let path = format!("tools[{k}]");
        if str_of(t, "type") != Some("function") {
            return Err(invalid(format!(
                "{path}.type: only function tools are supported for this model"
            )));
        }
        let f = t.get("function").unwrap_or(&Value::Null);
        let Some(name) = str_of(f, "name") else {
            return Err(invalid(format!("{path}.function.name: field required")));
        };
        let mut tool = Map::new();
        tool.insert("name".into(), json!(name));
        if let Some(d) = str_of(f, "description") {
            tool.insert("description".into(), json!(d));
        }
        let schema = match f.get("parameters") {
            Some(p @ Value::Object(_)) => p.clone(),
            // OpenAI allows a function without parameters; Anthropic requires a schema.
            _ => json!({"type": "object", "properties": {}}),
        };
        tool.insert("input_schema".into(), schema);
        out.push(Value::Object(tool));
    }
    Ok(out)
}

fn chat_tool_choice_to_messages(choice: Option<&Value>) -> Result<Option<Value>, InvalidRequest> {
    Ok(match choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            other => return Err(invalid(format!("tool_choice: unknown value `{other}`"))),
        }),
        Some(c) => {
            let name = c
                .get("function")
                .and_then(|f| str_of(f, "name"))
                .ok_or_else(|| invalid("tool_choice.function.name: field required"))?;
            Some(json!({"type": "tool", "name": name}))
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Answers: Anthropic → OpenAI.

/// A non-stream Anthropic message as an OpenAI chat completion (`created` in unix seconds,
/// chosen by the caller). Text blocks are joined into `content` (`null` when the answer is
/// only tool calls), `thinking` blocks into `reasoning_content`, `tool_use` blocks become
/// `tool_calls` (arguments = the JSON text of `input`). Usage: see [`anthropic_usage_to_chat`];
/// left out when the message has none.
#[must_use]
pub fn messages_response_to_chat(message: &Value, created: u64) -> Value {
    let mut text = String::new();
    let mut thinking = String::new();
    let mut calls = Vec::new();
    for block in message
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match str_of(block, "type") {
            Some("text") => text.push_str(str_of(block, "text").unwrap_or_default()),
            Some("thinking") => thinking.push_str(str_of(block, "thinking").unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": str_of(block, "id").unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": str_of(block, "name").unwrap_or_default(),
                    "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            // Redacted thinking and server tool blocks have no chat-completions form.
            _ => {}
        }
    }
    let mut msg = Map::new();
    msg.insert("role".into(), json!("assistant"));
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    };
    msg.insert("content".into(), content);
    if !thinking.is_empty() {
        msg.insert("reasoning_content".into(), Value::String(thinking));
    }
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    let mut out = json!({
        "id": str_of(message, "id").unwrap_or_default(),
        "object": "chat.completion",
        "created": created,
        "model": str_of(message, "model").unwrap_or_default(),
        "choices": [{
            "index": 0,
            "message": msg,
            "logprobs": null,
            "finish_reason": finish_reason_for(str_of(message, "stop_reason")),
        }],
    });
    if let Some(u) = message.get("usage").filter(|u| u.is_object()) {
        out["usage"] = anthropic_usage_to_chat(u);
    }
    out
}

/// Turns Anthropic stream events into OpenAI `chat.completion.chunk` values:
///
/// 1. a role chunk (`delta: {"role": "assistant", "content": ""}`) at `message_start` (or
///    before the first content, if `message_start` never came),
/// 2. `text_delta` → `delta.content`, `thinking_delta` → `delta.reasoning_content`, a
///    `tool_use` block start → `delta.tool_calls[{index, id, type, function: {name,
///    arguments: ""}}]`, `input_json_delta` → `delta.tool_calls[{index, function:
///    {arguments}}]` (tool calls numbered from 0 in block order),
/// 3. at `message_stop` (or [`EventsToChunks::finish`] when the stream ended without it): a
///    chunk with an empty delta and the mapped `finish_reason`, then, when both the prompt and
///    the completion counts are known, a usage-only chunk `{"choices": [], "usage": {…}}`.
///
/// An `error` event becomes `{"error": {…}}` in OpenAI's shape and ends the stream. Usage for
/// billing: [`EventsToChunks::reported_usage`].
#[derive(Debug, Default)]
pub struct EventsToChunks {
    created: u64,
    id: String,
    model: String,
    role_sent: bool,
    done: bool,
    /// (Anthropic block index, OpenAI tool call index) of the tool blocks seen.
    tools: Vec<(u64, u64)>,
    stop_reason: Option<String>,
    usage: StreamUsage,
}

impl EventsToChunks {
    /// A converter for one stream; `created` (unix seconds) goes into every chunk.
    #[must_use]
    pub fn new(created: u64) -> Self {
        EventsToChunks {
            created,
            ..Self::default()
        }
    }

    /// The usage reported by the events so far, for billing.
    #[must_use]
    pub fn reported_usage(&self) -> ReportedUsage {
        self.usage.reported()
    }

    /// The chunks for one event (its data, parsed; the `type` field names the event).
    pub fn push(&mut self, event: &Value) -> Vec<Value> {
        let mut chunks = Vec::new();
        if self.done {
            return chunks;
        }
        self.usage.observe(event);
        match str_of(event, "type") {
            Some("message_start") => {
                let m = event.get("message").unwrap_or(&Value::Null);
                self.id = str_of(m, "id").unwrap_or_default().to_owned();
                self.model = str_of(m, "model").unwrap_or_default().to_owned();
                self.role(&mut chunks);
            }
            Some("content_block_start") => {
                let block = event.get("content_block").unwrap_or(&Value::Null);
                let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                match str_of(block, "type") {
                    Some("tool_use") => {
                        let call = self.tools.len() as u64;
                        self.tools.push((index, call));
                        let delta = json!({"tool_calls": [{
                            "index": call,
                            "id": str_of(block, "id").unwrap_or_default(),
                            "type": "function",
                            "function": {"name": str_of(block, "name").unwrap_or_default(), "arguments": ""},
                        }]});
                        self.content(delta, &mut chunks);
                    }
                    Some("text") => {
                        if let Some(t) = non_empty(str_of(block, "text")) {
                            self.content(json!({"content": t}), &mut chunks);
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_delta") => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                match str_of(delta, "type") {
                    Some("text_delta") => {
                        if let Some(t) = non_empty(str_of(delta, "text")) {
                            self.content(json!({"content": t}), &mut chunks);
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(t) = non_empty(str_of(delta, "thinking")) {
                            self.content(json!({"reasoning_content": t}), &mut chunks);
                        }
                    }
                    Some("input_json_delta") => {
                        let call = self.tools.iter().find(|(b, _)| *b == index).map(|t| t.1);
                        if let (Some(call), Some(p)) =
                            (call, non_empty(str_of(delta, "partial_json")))
                        {
                            let d = json!({"tool_calls": [{"index": call, "function": {"arguments": p}}]});
                            self.content(d, &mut chunks);
                        }
                    }
                    // signature_delta, citations_delta: nothing to show.
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(r) = event
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stop_reason = Some(r.to_owned());
                }
            }
            Some("message_stop") => chunks.extend(self.finish()),
            Some("error") => {
                let err = anthropic_error_to_openai(500, event);
                chunks.push(err);
                self.done = true;
            }
            // ping, content_block_stop and anything new.
            _ => {}
        }
        chunks
    }

    /// The closing chunks (finish reason, then usage when known): call when the upstream
    /// stream ended; after `message_stop` (or a second call) it returns nothing.
    pub fn finish(&mut self) -> Vec<Value> {
        let mut chunks = Vec::new();
        if self.done {
            return chunks;
        }
        self.done = true;
        self.role(&mut chunks);
        let reason = finish_reason_for(self.stop_reason.as_deref());
        chunks.push(
            self.chunk(
                json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason}]),
            ),
        );
        if let Some(usage) = self.usage.as_chat() {
            let mut c = self.chunk(json!([]));
            c["usage"] = usage;
            chunks.push(c);
        }
        chunks
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    fn role(&mut self, chunks: &mut Vec<Value>) {
        if !self.role_sent {
            self.role_sent = true;
            chunks.push(self.chunk(
                json!([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                            "logprobs": null, "finish_reason": null}]),
            ));
        }
    }

    fn content(&mut self, delta: Value, chunks: &mut Vec<Value>) {
        self.role(chunks);
        chunks.push(
            self.chunk(
                json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]),
            ),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// Anthropic's error `type` for an HTTP status.
#[must_use]
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        // 400, 413, 422 and every other client error.
        _ => "invalid_request_error",
    }
}

/// An Anthropic error body: `{"type":"error","error":{"type","message"}}`, typed by status.
#[must_use]
pub fn error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type_for_status(status), "message": message}})
}

/// The message of an error body in either shape (`error.message`, a string `error`, or a
/// top-level `message`).
fn error_message(body: &Value) -> Option<&str> {
    let err = body.get("error");
    err.and_then(|e| str_of(e, "message"))
        .or_else(|| err.and_then(Value::as_str))
        .or_else(|| str_of(body, "message"))
        .filter(|m| !m.is_empty())
}

/// An OpenAI-shaped error body (`{"error":{"message",…}}`) in Anthropic's shape, its type
/// chosen by `status`.
#[must_use]
pub fn openai_error_to_anthropic(status: u16, body: &Value) -> Value {
    let fallback = format!("upstream error (HTTP {status})");
    error_body(status, error_message(body).unwrap_or(&fallback))
}

/// An Anthropic error body in OpenAI's shape `{"error":{"message","type","code"}}`: the
/// Anthropic type is kept as `type` (by `status` when absent), `code` is `null`.
#[must_use]
pub fn anthropic_error_to_openai(status: u16, body: &Value) -> Value {
    let fallback = format!("upstream error (HTTP {status})");
    let kind = body
        .get("error")
        .and_then(|e| str_of(e, "type"))
        .unwrap_or_else(|| error_type_for_status(status));
    json!({"error": {
        "message": error_message(body).unwrap_or(&fallback),
        "type": kind,
        "param": null,
        "code": null,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(events: &[AnthropicEvent]) -> Vec<&'static str> {
        events.iter().map(|(n, _)| *n).collect()
    }

    // -- Anthropic → OpenAI requests ----------------------------------------------------------

    #[test]
    fn a_plain_messages_request_becomes_a_chat_request() {
        let req = json!({
            "model": "qwen-plus", "max_tokens": 1024,
            "system": "You are terse.",
            "messages": [{"role": "user", "content": "Hello"}],
            "temperature": 0.5, "top_p": 0.9, "top_k": 40,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-42"},
            "thinking": {"type": "enabled", "budget_tokens": 1000},
        });
        let chat = messages_request_to_chat(&req).expect("valid");
        assert_eq!(
            chat,
            json!({
                "model": "qwen-plus", "max_tokens": 1024,
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Hello"},
                ],
                "temperature": 0.5, "top_p": 0.9,
                "stop": ["END"],
                "user": "u-42",
            })
        );
    }

    #[test]
    fn system_blocks_are_joined_and_empty_system_is_left_out() {
        let req = json!({"model": "m", "max_tokens": 5,
            "system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}],
            "messages": [{"role": "user", "content": "x"}]});
        let chat = messages_request_to_chat(&req).expect("valid");
        assert_eq!(
            chat["messages"][0],
            json!({"role": "system", "content": "A\nB"})
        );
        let req = json!({"model": "m", "max_tokens": 5, "system": "",
            "messages": [{"role": "user", "content": "x"}]});
        let chat = messages_request_to_chat(&req).expect("valid");
        assert_eq!(chat["messages"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn text_blocks_become_one_string_and_images_become_image_url_parts() {
        let req = json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}},
                {"type": "text", "text": "what are these?"},
            ]},
        ]});
        let chat = messages_request_to_chat(&req).expect("valid");
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "user", "content": "a\nb"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
                    {"type": "text", "text": "what are these?"},
                ]},
            ])
        );
    }

    #[test]
    fn documents_become_text_or_file_parts() {
        let req = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain doc"}},
            {"type": "document", "title": "r.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
        ]}]});
        let chat = messages_request_to_chat(&req).expect("valid");
        assert_eq!(
            chat["messages"][0]["content"],
            json!([
                {"type": "text", "text": "plain doc"},
                {"type": "file", "file": {"filename": "r.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
            ])
        );
    }

    #[test]
    fn tool_use_and_tool_result_become_tool_calls_and_tool_messages() {
        let req = json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "need a tool", "signature": "sig"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Hangzhou"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "text", "text": "here you go"},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                 "content": [{"type": "text", "text": "clock"}, {"type": "text", "text": "broken"}]},
            ]},
        ]});
        let chat = messages_request_to_chat(&req).expect("valid");
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Hangzhou\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: clock\nbroken"},
                {"role": "user", "content": "here you go"},
            ])
        );
    }

    #[test]
    fn an_assistant_turn_of_only_tool_calls_has_null_content_and_tool_result_images_follow() {
        let req = json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": "shot"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "screenshot", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
                {"type": "text", "text": "taken"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAA"}},
            ]}]},
        ]});
        let chat = messages_request_to_chat(&req).expect("valid");
        assert_eq!(chat["messages"][1]["content"], Value::Null);
        assert_eq!(
            chat["messages"][2],
            json!({"role": "tool", "tool_call_id": "t", "content": "taken"})
        );
        assert_eq!(
            chat["messages"][3],
            json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAA"}}]})
        );
    }

    #[test]
    fn tools_and_each_tool_choice_map_to_openai() {
        let base = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "get_weather", "description": "Weather by city",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                       "cache_control": {"type": "ephemeral"}}]});
        let chat = messages_request_to_chat(&base).expect("valid");
        assert_eq!(
            chat["tools"],
            json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
        );
        assert!(chat.get("tool_choice").is_none());
        for (choice, expected) in [
            (json!({"type": "auto"}), json!("auto")),
            (json!({"type": "any"}), json!("required")),
            (json!({"type": "none"}), json!("none")),
            (
                json!({"type": "tool", "name": "get_weather"}),
                json!({"type": "function", "function": {"name": "get_weather"}}),
            ),
        ] {
            let mut req = base.clone();
            req["tool_choice"] = choice;
            let chat = messages_request_to_chat(&req).expect("valid");
            assert_eq!(chat["tool_choice"], expected);
            assert!(chat.get("parallel_tool_calls").is_none());
        }
        let mut req = base.clone();
        req["tool_choice"] = json!({"type": "auto", "disable_parallel_tool_use": true});
        let chat = messages_request_to_chat(&req).expect("valid");
        assert_eq!(chat["parallel_tool_calls"], false);
        // Without tools, OpenAI would reject a tool_choice.
        let mut req = base;
        req["tools"] = json!([]);
        req["tool_choice"] = json!({"type": "any"});
        let chat = messages_request_to_chat(&req).expect("valid");
        assert!(chat.get("tools").is_none() && chat.get("tool_choice").is_none());
    }

    #[test]
    fn streams_ask_for_usage() {
        let req = json!({"model": "m", "max_tokens": 5, "stream": true,
                         "messages": [{"role": "user", "content": "x"}]});
        let chat = messages_request_to_chat(&req).expect("valid");
        assert_eq!(chat["stream"], true);
        assert_eq!(chat["stream_options"], json!({"include_usage": true}));
        let req = json!({"model": "m", "max_tokens": 5, "stream": false,
                         "messages": [{"role": "user", "content": "x"}]});
        let chat = messages_request_to_chat(&req).expect("valid");
        assert!(chat.get("stream").is_none() && chat.get("stream_options").is_none());
    }

    #[test]
    fn the_converted_request_is_one_the_chat_parser_accepts() {
        let req = json!({"model": "qwen-plus", "max_tokens": 300, "stream": true,
                         "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                            {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]}]});
        let chat = messages_request_to_chat(&req).expect("valid");
        let parsed = crate::wire::ChatRequest::parse(chat.to_string().as_bytes()).expect("parses");
        assert_eq!(parsed.max_tokens, Some(300));
        assert!(parsed.stream);
        assert_eq!(parsed.media_parts, 1);
    }

    #[test]
    fn invalid_messages_requests_are_refused_with_a_reason() {
        let ok_msgs = json!([{"role": "user", "content": "x"}]);
        let cases = [
            (json!([]), "JSON object"),
            (json!({"max_tokens": 5, "messages": ok_msgs}), "model"),
            (json!({"model": "m", "messages": ok_msgs}), "max_tokens"),
            (
                json!({"model": "m", "max_tokens": "5", "messages": ok_msgs}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "max_tokens": 0, "messages": ok_msgs}),
                "max_tokens",
            ),
            (json!({"model": "m", "max_tokens": 5}), "messages"),
            (
                json!({"model": "m", "max_tokens": 5, "messages": []}),
                "messages",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": "hi"}),
                "messages",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
                "messages.0.role",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 3}]}),
                "messages.0.content",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "audio"}]}]}),
                "unsupported content block type `audio`",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"text": "no type"}]}]}),
                "messages.0.content.0.type",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "messages.0.content.0.text",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}]}]}),
                "only allowed in assistant messages",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "a"}]}]}),
                "only allowed in user messages",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}),
                "image source `file`",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": ok_msgs, "stream": "yes"}),
                "stream",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": ok_msgs, "system": 1}),
                "system",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": ok_msgs, "temperature": "hot"}),
                "temperature",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": ok_msgs, "tools": [{"name": "t"}]}),
                "tools.0.input_schema",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": ok_msgs, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "tools.0.type",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": ok_msgs, "tool_choice": {"type": "sometimes"}}),
                "tool_choice.type",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": ok_msgs, "metadata": {"user_id": 7}}),
                "metadata.user_id",
            ),
        ];
        for (req, needle) in cases {
            let err = messages_request_to_chat(&req).expect_err(&req.to_string());
            assert!(err.0.contains(needle), "{req}: {err}");
        }
    }

    // -- OpenAI → Anthropic answers -----------------------------------------------------------

    #[test]
    fn a_chat_completion_becomes_a_message() {
        let resp = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "qwen-plus",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 14, "completion_tokens": 18, "total_tokens": 32,
                      "prompt_tokens_details": {"cached_tokens": 4}}});
        assert_eq!(
            chat_response_to_messages(&resp),
            json!({"id": "chatcmpl-1", "type": "message", "role": "assistant",
                   "content": [{"type": "text", "text": "Hi there"}],
                   "model": "qwen-plus", "stop_reason": "end_turn", "stop_sequence": null,
                   "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 4, "output_tokens": 18}})
        );
    }

    #[test]
    fn reasoning_refusals_and_tool_calls_become_blocks() {
        let resp = json!({"id": "c", "model": "deepseek-reasoner", "choices": [{"index": 0, "message": {
            "role": "assistant", "content": "Checking.", "reasoning_content": "think",
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Hangzhou\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "broken", "arguments": "{\"city\":"}},
                {"id": "call_c", "type": "function", "function": {"name": "noargs", "arguments": ""}},
            ]}, "finish_reason": "tool_calls"}]});
        let m = chat_response_to_messages(&resp);
        assert_eq!(
            m["content"],
            json!([
                {"type": "thinking", "thinking": "think", "signature": ""},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Hangzhou"}},
                {"type": "tool_use", "id": "call_b", "name": "broken", "input": {"raw": "{\"city\":"}},
                {"type": "tool_use", "id": "call_c", "name": "noargs", "input": {}},
            ])
        );
        assert_eq!(m["stop_reason"], "tool_use");
        // No usage at all: zeros for display.
        assert_eq!(m["usage"]["input_tokens"], 0);
        assert_eq!(m["usage"]["output_tokens"], 0);
        let refused = json!({"choices": [{"message": {"content": null, "refusal": "I can't."}, "finish_reason": "content_filter"}]});
        let m = chat_response_to_messages(&refused);
        assert_eq!(m["content"], json!([{"type": "text", "text": "I can't."}]));
        assert_eq!(m["stop_reason"], "refusal");
        assert_eq!(m["id"], FALLBACK_MESSAGE_ID);
        let legacy = json!({"choices": [{"message": {"content": null, "function_call": {"name": "f", "arguments": "{\"a\":1}"}}, "finish_reason": "function_call"}]});
        let m = chat_response_to_messages(&legacy);
        assert_eq!(
            m["content"],
            json!([{"type": "tool_use", "id": "call_function", "name": "f", "input": {"a": 1}}])
        );
        assert_eq!(m["stop_reason"], "tool_use");
    }

    #[test]
    fn every_finish_reason_maps_to_a_stop_reason_and_back() {
        for (finish, stop) in [
            (Some("stop"), "end_turn"),
            (Some("length"), "max_tokens"),
            (Some("tool_calls"), "tool_use"),
            (Some("function_call"), "tool_use"),
            (Some("content_filter"), "refusal"),
            (Some("something_new"), "end_turn"),
            (None, "end_turn"),
        ] {
            assert_eq!(stop_reason_for(finish), stop, "{finish:?}");
        }
        for (stop, finish) in [
            (Some("end_turn"), "stop"),
            (Some("stop_sequence"), "stop"),
            (Some("pause_turn"), "stop"),
            (Some("max_tokens"), "length"),
            (Some("model_context_window_exceeded"), "length"),
            (Some("tool_use"), "tool_calls"),
            (Some("refusal"), "content_filter"),
            (None, "stop"),
        ] {
            assert_eq!(finish_reason_for(stop), finish, "{stop:?}");
        }
    }

    #[test]
    fn openai_usage_shows_as_anthropic_usage_in_every_spelling() {
        assert_eq!(
            chat_usage_to_anthropic(&json!({"prompt_tokens": 100, "completion_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 60}})),
            json!({"input_tokens": 40, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 60, "output_tokens": 7})
        );
        // DeepSeek's spelling.
        assert_eq!(
            chat_usage_to_anthropic(
                &json!({"prompt_tokens": 10, "completion_tokens": 1, "prompt_cache_hit_tokens": 8})
            )["input_tokens"],
            2
        );
        // A cached count above the prompt cannot make input negative; hostile numbers show 0.
        assert_eq!(
            chat_usage_to_anthropic(&json!({"prompt_tokens": 3, "completion_tokens": -1,
                "prompt_tokens_details": {"cached_tokens": 9}})),
            json!({"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 3, "output_tokens": 0})
        );
    }

    // -- OpenAI chunks → Anthropic events -----------------------------------------------------

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": "qwen-plus",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    fn usage_chunk() -> Value {
        json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": "qwen-plus", "choices": [],
               "usage": {"prompt_tokens": 14, "completion_tokens": 18, "total_tokens": 32,
                         "prompt_tokens_details": {"cached_tokens": 4}}})
    }

    fn run(chunks: &[Value]) -> Vec<AnthropicEvent> {
        let mut c = ChunksToEvents::new();
        let mut events: Vec<AnthropicEvent> = chunks.iter().flat_map(|ch| c.push(ch)).collect();
        events.extend(c.finish());
        // Finishing twice or pushing after the end adds nothing.
        assert!(c.finish().is_empty());
        assert!(c.push(&chunks[0]).is_empty());
        events
    }

    #[test]
    fn a_text_stream_becomes_anthropics_exact_event_sequence() {
        let events = run(&[
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "你好"}), Value::Null),
            chunk(json!({"content": "！"}), Value::Null),
            chunk(json!({}), json!("stop")),
            usage_chunk(),
        ]);
        let expected: Vec<AnthropicEvent> = vec![
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "chatcmpl-9", "type": "message", "role": "assistant",
                "content": [], "model": "qwen-plus", "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "你好"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "！"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4, "output_tokens": 18}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        assert_eq!(events, expected);
    }

    #[test]
    fn a_stream_without_usage_still_ends_well_formed() {
        let events = run(&[
            chunk(json!({"role": "assistant", "content": "Hi"}), Value::Null),
            chunk(json!({}), json!("length")),
        ]);
        assert_eq!(
            names(&events),
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(
            events[4].1,
            json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
                   "usage": {"output_tokens": 0}})
        );
    }

    #[test]
    fn a_cut_stream_closes_its_open_block_and_ends_the_turn() {
        let events = run(&[chunk(json!({"content": "Hel"}), Value::Null)]);
        assert_eq!(
            names(&events),
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[4].1["delta"]["stop_reason"], "end_turn");
        // Nothing at all from upstream: still a whole (empty) message.
        let mut c = ChunksToEvents::new();
        assert_eq!(
            names(&c.finish()),
            ["message_start", "message_delta", "message_stop"]
        );
    }

    #[test]
    fn a_tool_stream_becomes_text_then_tool_use_blocks_with_input_json_deltas() {
        let events = run(&[
            chunk(
                json!({"role": "assistant", "reasoning_content": "hmm"}),
                Value::Null,
            ),
            chunk(json!({"content": "Let me check."}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                   "function": {"name": "get_weather", "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Hangzhou\"}"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                   "function": {"name": "get_time", "arguments": "{}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
            usage_chunk(),
        ]);
        let expected: Vec<AnthropicEvent> = vec![
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "chatcmpl-9", "type": "message", "role": "assistant",
                "content": [], "model": "qwen-plus", "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Let me check."}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"Hangzhou\"}"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 2}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 3}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4, "output_tokens": 18}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        assert_eq!(events, expected);
    }

    #[test]
    fn usage_in_the_first_chunk_shows_in_message_start_and_errors_end_the_stream() {
        let mut c = ChunksToEvents::new();
        let mut first = chunk(json!({"content": "x"}), Value::Null);
        first["usage"] = json!({"prompt_tokens": 9, "completion_tokens": 1});
        let events = c.push(&first);
        assert_eq!(
            events[0].1["message"]["usage"]["input_tokens"], 9,
            "{events:?}"
        );
        assert_eq!(events[0].1["message"]["usage"]["output_tokens"], 0);
        let events =
            c.push(&json!({"error": {"message": "upstream broke", "type": "server_error"}}));
        assert_eq!(names(&events), ["content_block_stop", "error"]);
        assert_eq!(
            events[1].1,
            json!({"type": "error", "error": {"type": "api_error", "message": "upstream broke"}})
        );
        assert!(c.finish().is_empty());
    }

    #[test]
    fn events_render_as_sse() {
        let bytes = sse_event("message_stop", &json!({"type": "message_stop"}));
        assert_eq!(
            &bytes[..],
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        assert_eq!(&sse_data(&json!({"a": 1}))[..], b"data: {\"a\":1}\n\n");
    }

    // -- OpenAI → Anthropic requests ----------------------------------------------------------

    fn chat_body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn a_chat_request_becomes_a_messages_request() {
        let body = chat_body(json!({
            "model": "claude-haiku-4-5", "stream": true, "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
                {"role": "user", "content": "Hi"},
            ],
            "temperature": 1.6, "top_p": 0.5, "stop": "END", "user": "u-1",
            "max_tokens": 100, "max_completion_tokens": 200, "seed": 7,
        }));
        assert_eq!(
            chat_request_to_messages(&body, 4096).expect("valid"),
            json!({
                "model": "claude-haiku-4-5", "max_tokens": 200,
                "system": "Be brief.\nUse metric.",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                "temperature": 1, "top_p": 0.5, "stop_sequences": ["END"],
                "stream": true, "metadata": {"user_id": "u-1"},
            })
        );
        let body = chat_body(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                    "temperature": 0.3, "stop": ["a", "b"]}),
        );
        let m = chat_request_to_messages(&body, 4096).expect("valid");
        assert_eq!(m["max_tokens"], 4096);
        assert_eq!(m["temperature"], json!(0.3));
        assert_eq!(m["stop_sequences"], json!(["a", "b"]));
        assert!(m.get("system").is_none() && m.get("stream").is_none());
    }

    #[test]
    fn tool_calls_and_tool_messages_become_tool_use_and_tool_result_blocks() {
        let body = chat_body(json!({"model": "m", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Hangzhou\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": "not json"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "thanks"},
            {"role": "assistant", "content": ""},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                  {"type": "function", "function": {"name": "get_time"}}],
        "tool_choice": "required", "parallel_tool_calls": false}));
        let m = chat_request_to_messages(&body, 1024).expect("valid");
        assert_eq!(
            m["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Hangzhou"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {"raw": "not json"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "noon"},
                    {"type": "text", "text": "thanks"},
                ]},
            ])
        );
        assert_eq!(
            m["tools"],
            json!([
                {"name": "get_weather", "description": "d", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
            ])
        );
        assert_eq!(
            m["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        for (choice, expected) in [
            (json!("auto"), json!({"type": "auto"})),
            (json!("none"), json!({"type": "none"})),
            (
                json!({"type": "function", "function": {"name": "get_time"}}),
                json!({"type": "tool", "name": "get_time"}),
            ),
        ] {
            let mut b = body.clone();
            b.insert("tool_choice".into(), choice);
            b.remove("parallel_tool_calls");
            let m = chat_request_to_messages(&b, 1024).expect("valid");
            assert_eq!(m["tool_choice"], expected);
        }
    }

    #[test]
    fn images_and_files_become_image_and_document_blocks() {
        let body = chat_body(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
                {"type": "file", "file": {"filename": "r.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
            ]}]}),
        );
        let m = chat_request_to_messages(&body, 10).expect("valid");
        assert_eq!(
            m["messages"][0]["content"],
            json!([
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}, "title": "r.pdf"},
            ])
        );
    }

    #[test]
    fn chat_requests_anthropic_cannot_take_are_refused() {
        for (body, needle) in [
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}),
                "n greater than 1",
            ),
            (
                json!({"model": "m", "messages": [{"role": "system", "content": "only"}]}),
                "at least one",
            ),
            (
                json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]}),
                "function messages",
            ),
            (
                json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
                "tool_call_id",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
                "input_audio",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "custom", "custom": {}}]}),
                "only function tools",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                       "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}),
                "tool_choice",
            ),
        ] {
            let err = chat_request_to_messages(&chat_body(body.clone()), 10)
                .expect_err(&body.to_string());
            assert!(err.0.contains(needle), "{body}: {err}");
        }
    }

    // -- Anthropic → OpenAI answers -----------------------------------------------------------

    #[test]
    fn a_message_becomes_a_chat_completion() {
        let msg = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                        {"type": "text", "text": "Sure. "},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Hangzhou"}},
                        {"type": "text", "text": "Done."}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 4, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 8, "output_tokens": 18}});
        assert_eq!(
            messages_response_to_chat(&msg, 1_753_902_335),
            json!({"id": "msg_1", "object": "chat.completion", "created": 1_753_902_335, "model": "claude-haiku-4-5",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Sure. Done.",
                        "reasoning_content": "hm",
                        "tool_calls": [{"id": "toolu_1", "type": "function",
                                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Hangzhou\"}"}}]},
                        "logprobs": null, "finish_reason": "tool_calls"}],
                   "usage": {"prompt_tokens": 14, "completion_tokens": 18, "total_tokens": 32,
                             "prompt_tokens_details": {"cached_tokens": 8}}})
        );
        let only_tool = json!({"content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "stop_reason": "tool_use"});
        let c = messages_response_to_chat(&only_tool, 0);
        assert_eq!(c["choices"][0]["message"]["content"], Value::Null);
        assert!(c.get("usage").is_none());
        let empty = json!({"content": [], "stop_reason": "max_tokens"});
        let c = messages_response_to_chat(&empty, 0);
        assert_eq!(c["choices"][0]["message"]["content"], "");
        assert_eq!(c["choices"][0]["finish_reason"], "length");
    }

    // -- Anthropic usage ----------------------------------------------------------------------

    #[test]
    fn each_anthropic_usage_field_is_read_for_billing() {
        assert_eq!(
            reported_usage(&json!({"input_tokens": 14, "output_tokens": 18})),
            ReportedUsage {
                prompt: Reported::Count(14),
                completion: Reported::Count(18),
                cached: Reported::Absent,
            }
        );
        // Cache reads and writes are input tokens Anthropic leaves out of input_tokens.
        assert_eq!(
            reported_usage(&json!({"input_tokens": 4, "cache_read_input_tokens": 8,
                                   "cache_creation_input_tokens": 2, "output_tokens": 18})),
            ReportedUsage::counts(14, 18, 8)
        );
        assert_eq!(
            reported_usage(&json!({"input_tokens": 4, "cache_read_input_tokens": null,
                                   "cache_creation_input_tokens": 6, "output_tokens": 1})),
            ReportedUsage {
                prompt: Reported::Count(10),
                completion: Reported::Count(1),
                cached: Reported::Absent,
            }
        );
        assert_eq!(reported_usage(&json!({})), ReportedUsage::default());
        assert_eq!(reported_usage(&Value::Null), ReportedUsage::default());
        assert_eq!(
            reported_usage(&json!({"output_tokens": 3, "cache_read_input_tokens": 2})),
            ReportedUsage {
                prompt: Reported::Absent,
                completion: Reported::Count(3),
                cached: Reported::Count(2),
            }
        );
    }

    #[test]
    fn hostile_anthropic_usage_numbers_are_invalid() {
        assert_eq!(
            reported_usage(
                &json!({"input_tokens": -5, "output_tokens": 1.5, "cache_read_input_tokens": "3"})
            ),
            ReportedUsage {
                prompt: Reported::Invalid,
                completion: Reported::Invalid,
                cached: Reported::Invalid,
            }
        );
        // A sum beyond 64 bits is invalid, not wrapped.
        let u =
            reported_usage(&json!({"input_tokens": u64::MAX, "cache_creation_input_tokens": 1}));
        assert_eq!(u.prompt, Reported::Invalid);
        let u = reported_usage(&json!({"input_tokens": 1, "cache_creation_input_tokens": true}));
        assert_eq!(u.prompt, Reported::Invalid);
        let u = reported_usage(
            &serde_json::from_str::<Value>(r#"{"output_tokens": 100000000000000000000}"#)
                .expect("json"),
        );
        assert_eq!(u.completion, Reported::Invalid);
    }

    #[test]
    fn stream_usage_takes_input_from_message_start_and_output_from_message_delta() {
        let mut u = StreamUsage::default();
        assert!(!u.seen());
        u.observe(&json!({"type": "message_start", "message": {"usage":
            {"input_tokens": 4, "cache_read_input_tokens": 8, "cache_creation_input_tokens": 2, "output_tokens": 1}}}));
        assert!(u.seen());
        // The placeholder output count of message_start is not a report.
        assert_eq!(
            u.reported(),
            ReportedUsage {
                prompt: Reported::Count(14),
                completion: Reported::Absent,
                cached: Reported::Count(8),
            }
        );
        u.observe(&json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}));
        u.observe(&json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 18}}));
        assert_eq!(u.reported(), ReportedUsage::counts(14, 18, 8));
        // A later report of the input counts wins.
        u.observe(
            &json!({"type": "message_delta", "usage": {"input_tokens": 5, "output_tokens": 20}}),
        );
        assert_eq!(u.reported(), ReportedUsage::counts(15, 20, 8));
    }

    #[test]
    fn generated_text_is_read_from_messages_and_events() {
        let mut out = String::new();
        message_text_into(
            &json!({"content": [{"type": "thinking", "thinking": "t"}, {"type": "text", "text": "a"},
                                {"type": "tool_use", "name": "f", "input": {"x": 1}}]}),
            &mut out,
        );
        assert_eq!(out, "taf{\"x\":1}");
        let mut out = String::new();
        for e in [
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"x\""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "hi"}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "thinking_delta", "thinking": "th"}}),
            json!({"type": "message_stop"}),
        ] {
            event_text_into(&e, &mut out);
        }
        assert_eq!(out, "f{\"x\"hith");
    }

    // -- Anthropic events → OpenAI chunks -----------------------------------------------------

    fn anthropic_text_stream() -> Vec<Value> {
        vec![
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                   "content": [], "model": "claude-haiku-4-5", "stop_reason": null, "stop_sequence": null,
                   "usage": {"input_tokens": 4, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 8, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "你好"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "！"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 18}}),
            json!({"type": "message_stop"}),
        ]
    }

    fn oai(delta: Value, finish: Value) -> Value {
        json!({"id": "msg_1", "object": "chat.completion.chunk", "created": 7, "model": "claude-haiku-4-5",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    }

    #[test]
    fn an_anthropic_text_stream_becomes_openai_chunks() {
        let mut c = EventsToChunks::new(7);
        let chunks: Vec<Value> = anthropic_text_stream()
            .iter()
            .flat_map(|e| c.push(e))
            .collect();
        assert_eq!(
            chunks,
            vec![
                oai(json!({"role": "assistant", "content": ""}), Value::Null),
                oai(json!({"content": "你好"}), Value::Null),
                oai(json!({"content": "！"}), Value::Null),
                oai(json!({}), json!("stop")),
                json!({"id": "msg_1", "object": "chat.completion.chunk", "created": 7, "model": "claude-haiku-4-5",
                       "choices": [], "usage": {"prompt_tokens": 14, "completion_tokens": 18, "total_tokens": 32,
                                                "prompt_tokens_details": {"cached_tokens": 8}}}),
            ]
        );
        assert_eq!(c.reported_usage(), ReportedUsage::counts(14, 18, 8));
        assert!(c.finish().is_empty());
        assert!(c.push(&json!({"type": "message_stop"})).is_empty());
    }

    #[test]
    fn an_anthropic_tool_stream_becomes_tool_call_chunks() {
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_2", "model": "claude-haiku-4-5",
                   "usage": {"input_tokens": 20, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "abc"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Checking."}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"Hangzhou\"}"}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}}}),
            json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
            json!({"type": "content_block_stop", "index": 3}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 40}}),
            json!({"type": "message_stop"}),
        ];
        let mut c = EventsToChunks::new(7);
        let chunks: Vec<Value> = events.iter().flat_map(|e| c.push(e)).collect();
        let o = |delta: Value, finish: Value| {
            let mut v = oai(delta, finish);
            v["id"] = json!("msg_2");
            v
        };
        assert_eq!(
            chunks,
            vec![
                o(json!({"role": "assistant", "content": ""}), Value::Null),
                o(json!({"reasoning_content": "hm"}), Value::Null),
                o(json!({"content": "Checking."}), Value::Null),
                o(
                    json!({"tool_calls": [{"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                    Value::Null
                ),
                o(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
                    Value::Null
                ),
                o(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Hangzhou\"}"}}]}),
                    Value::Null
                ),
                o(
                    json!({"tool_calls": [{"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}]}),
                    Value::Null
                ),
                o(
                    json!({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
                    Value::Null
                ),
                o(json!({}), json!("tool_calls")),
                json!({"id": "msg_2", "object": "chat.completion.chunk", "created": 7, "model": "claude-haiku-4-5",
                       "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 40, "total_tokens": 60,
                                                "prompt_tokens_details": {"cached_tokens": 0}}}),
            ]
        );
    }

    #[test]
    fn a_cut_anthropic_stream_finishes_without_usage() {
        let mut c = EventsToChunks::new(7);
        let events = anthropic_text_stream();
        let mut chunks: Vec<Value> = events[..4].iter().flat_map(|e| c.push(e)).collect();
        chunks.extend(c.finish());
        assert_eq!(
            chunks,
            vec![
                oai(json!({"role": "assistant", "content": ""}), Value::Null),
                oai(json!({"content": "你好"}), Value::Null),
                oai(json!({}), json!("stop")),
            ]
        );
        // The prompt was reported; the completion must be counted by Tollgate.
        assert_eq!(
            c.reported_usage(),
            ReportedUsage {
                prompt: Reported::Count(14),
                completion: Reported::Absent,
                cached: Reported::Count(8),
            }
        );
    }

    #[test]
    fn an_anthropic_error_event_becomes_an_openai_error_chunk() {
        let mut c = EventsToChunks::new(7);
        let _ = c.push(&anthropic_text_stream()[0]);
        let chunks = c.push(
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        );
        assert_eq!(
            chunks,
            vec![
                json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": null}})
            ]
        );
        assert!(c.finish().is_empty());
    }

    // -- Errors -------------------------------------------------------------------------------

    #[test]
    fn error_types_follow_the_status() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (413, "invalid_request_error"),
            (422, "invalid_request_error"),
            (401, "authentication_error"),
            (402, "billing_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "api_error"),
            (504, "api_error"),
            (529, "overloaded_error"),
        ] {
            assert_eq!(error_type_for_status(status), kind, "{status}");
        }
        assert_eq!(
            error_body(403, "余额不足"),
            json!({"type": "error", "error": {"type": "permission_error", "message": "余额不足"}})
        );
    }

    #[test]
    fn error_bodies_convert_both_ways() {
        let openai = json!({"error": {"message": "bad messages", "type": "invalid_request_error", "code": "bad_messages"}});
        assert_eq!(
            openai_error_to_anthropic(400, &openai),
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "bad messages"}})
        );
        assert_eq!(
            openai_error_to_anthropic(502, &json!("<html>")),
            json!({"type": "error", "error": {"type": "api_error", "message": "upstream error (HTTP 502)"}})
        );
        assert_eq!(
            openai_error_to_anthropic(429, &json!({"error": "slow down"}))["error"]["message"],
            "slow down"
        );
        let anthropic =
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Too many"}});
        assert_eq!(
            anthropic_error_to_openai(429, &anthropic),
            json!({"error": {"message": "Too many", "type": "rate_limit_error", "param": null, "code": null}})
        );
        assert_eq!(
            anthropic_error_to_openai(529, &Value::Null),
            json!({"error": {"message": "upstream error (HTTP 529)", "type": "overloaded_error", "param": null, "code": null}})
        );
    }
}
