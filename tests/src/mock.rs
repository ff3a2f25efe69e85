//! A mock LLM provider: a real HTTP/1.1 server on a random port speaking the OpenAI
//! chat-completions wire format — JSON answers, SSE streams (chunked, with the usage chunk when
//! asked), OpenAI-shaped errors — and the failure modes the relay must survive: slow first byte,
//! a stream that stalls, a connection closed mid-stream. It records every request so tests can
//! check what the gateway forwarded and how many calls got through.
//!
//! It also speaks, on the same port:
//! * Anthropic's Messages API, `POST /v1/messages`: JSON answers (`content` [`REPLY`],
//!   `usage` [`PROMPT_TOKENS`] in and [`COMPLETION_TOKENS`] out), SSE streams with Anthropic's
//!   events and `event:` lines (`message_start`, `ping`, `content_block_start`, one
//!   `content_block_delta` per 6 characters, `content_block_stop`, `message_delta` with the
//!   usage, `message_stop`; no `[DONE]`), errors as `{"type":"error","error":{"type","message"}}`;
//!   and `POST /v1/messages/count_tokens` (`{"input_tokens": PROMPT_TOKENS}`).
//! * `POST /v1/embeddings`: one vector of [`EMBEDDING_DIMENSIONS`] floats per input (or
//!   `dimensions`; base64 of little-endian `f32`s when `encoding_format` is `base64`, as the
//!   OpenAI SDKs ask), `usage.prompt_tokens` = [`embedding_tokens`] of the input.
//! * `POST /v1/completions` (legacy text completions): [`REPLY`] as `text`, streamed like chat.
//!
//! The upstream model name picks the behaviour (a channel's `model_mapping` points a public name
//! at one of these); unless a row names its endpoints, it holds for every endpoint:
//!
//! | model contains | behaviour |
//! |---|---|
//! | `fail-500`, `fail-429`, `fail-401`, `fail-403` | that status with an OpenAI error (an Anthropic error on `/v1/messages…`) |
//! | `flaky-429` | the first call of that model: 429 with `Retry-After: 1`; later calls succeed |
//! | `fail-529` | `/v1/messages…` only: 529 `overloaded_error` |
//! | `fail-400` | 400 whose message echoes the `Authorization` header it got (`x-api-key` on `/v1/messages…`: a leaky provider) |
//! | `slow` | waits [`SLOW_MS`] before answering; a client that hangs up meanwhile is counted in [`MockProvider::cancelled`] |
//! | `obey-max` | reports as many completion tokens as `max_tokens` allows (as DeepSeek and DashScope honour it) |
//! | `tools` | chat: streams only `tool_calls` arguments ([`TOOL_ARGUMENT_CHUNKS`] pieces of 25 characters, 5 ms apart), usage [`TOOL_COMPLETION_TOKENS`]; messages: a text block [`TOOL_PREAMBLE`] then a `tool_use` block ([`TOOL_NAME`], input [`tool_input`], streamed as [`TOOL_ARGUMENT_CHUNKS`] `input_json_delta`s 5 ms apart), `stop_reason` `tool_use`, [`TOOL_COMPLETION_TOKENS`] out |
//! | `cached` | of the [`PROMPT_TOKENS`], [`CACHED_TOKENS`] were cache reads: chat reports `prompt_tokens_details.cached_tokens`; messages report `input_tokens` [`PROMPT_TOKENS`] − [`CACHED_TOKENS`] − [`CACHE_WRITE_TOKENS`], `cache_read_input_tokens` [`CACHED_TOKENS`], `cache_creation_input_tokens` [`CACHE_WRITE_TOKENS`] |
//! | `usage-max`, `usage-negative`, `usage-huge` | reports `prompt_tokens` (`input_tokens`) 2^63−1; negative counts; 10^15 completion tokens |
//! | `stall` | chat, messages, completions: streams two pieces, then sends nothing more |
//! | `close` | chat, messages, completions: streams two pieces, then drops the connection (no end, no usage) |
//! | `nousage` | answers without any `usage` |
//! | `long` | chat, messages, completions: streams [`LONG_CHUNKS`] pieces 10 ms apart |
//! | anything else | success: [`PROMPT_TOKENS`] + [`COMPLETION_TOKENS`] tokens (embeddings: [`embedding_tokens`]) |

use base64::Engine as _;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Prompt tokens the mock reports.
pub const PROMPT_TOKENS: u64 = 14;
/// Completion tokens the mock reports.
pub const COMPLETION_TOKENS: u64 = 18;
/// The reply text.
pub const REPLY: &str = "你好！很高兴见到你！今天过得怎么样？有什么我可以帮你的吗？";
/// Delay of the `slow` model.
pub const SLOW_MS: u64 = 2_000;
/// Chunks of the `long` model.
pub const LONG_CHUNKS: usize = 40;
/// Argument pieces of the `tools` model.
pub const TOOL_ARGUMENT_CHUNKS: usize = 60;
/// Completion tokens the `tools` model reports at the end of its stream.
pub const TOOL_COMPLETION_TOKENS: u64 = 300;
/// Prompt tokens the `cached` model reports as read from the cache.
pub const CACHED_TOKENS: u64 = 8;
/// Prompt tokens the `cached` model reports as written to the cache (`/v1/messages` only).
pub const CACHE_WRITE_TOKENS: u64 = 2;
/// The text block before the tool call of the `tools` model on `/v1/messages`.
pub const TOOL_PREAMBLE: &str = "让我查一下天气。";
/// The tool the `tools` model calls.
pub const TOOL_NAME: &str = "get_weather";
/// Floats per embedding when the request sets no `dimensions`.
pub const EMBEDDING_DIMENSIONS: usize = 4;
/// The most floats per embedding the mock makes, whatever `dimensions` asks.
pub const MAX_EMBEDDING_DIMENSIONS: usize = 4096;

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Request path.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Parsed JSON body (`Null` if not JSON).
    pub body: Value,
}

impl Recorded {
    /// A header value.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running mock provider.
#[derive(Clone)]
pub struct MockProvider {
    /// `http://127.0.0.1:<port>/v1`.
    pub base_url: String,
    seen: Arc<Mutex<Vec<Recorded>>>,
    cancelled: Arc<AtomicUsize>,
}

impl MockProvider {
    /// Starts the mock on a random loopback port.
    pub async fn start() -> MockProvider {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cancelled = Arc::new(AtomicUsize::new(0));
        let log = Arc::clone(&seen);
        let gone = Arc::clone(&cancelled);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                // Head and body go out as separate writes: without this, delayed ACKs add 40 ms.
                let _ = socket.set_nodelay(true);
                let log = Arc::clone(&log);
                let gone = Arc::clone(&gone);
                tokio::spawn(async move {
                    let _ = serve(socket, log, gone).await;
                });
            }
        });
        MockProvider {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            seen,
            cancelled,
        }
    }

    /// Every request received so far on a served path (chat, messages, count_tokens,
    /// embeddings, completions).
    #[must_use]
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many requests named this upstream model.
    #[must_use]
    pub fn calls_for(&self, model: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.body["model"] == model)
            .count()
    }

    /// How many requests arrived on a served path.
    #[must_use]
    pub fn calls(&self) -> usize {
        self.requests().len()
    }

    /// How many `slow` calls the caller hung up on before the answer was sent.
    #[must_use]
    pub fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }
}

async fn serve(
    socket: TcpStream,
    log: Arc<Mutex<Vec<Recorded>>>,
    cancelled: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(socket);
    'requests: loop {
        // Head.
        let mut head = Vec::new();
        loop {
            let mut byte = [0u8; 1];
            if reader.read(&mut byte).await? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
            if head.ends_with(b"\r\n\r\n") {
                break;
            }
            if head.len() > 64 * 1024 {
                return Ok(());
            }
        }
        let text = String::from_utf8_lossy(&head).to_string();
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await?;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let api = match path.split('?').next().unwrap_or_default() {
            "/v1/chat/completions" => Api::Chat,
            "/v1/messages" => Api::Messages,
            "/v1/messages/count_tokens" => Api::CountTokens,
            "/v1/embeddings" => Api::Embeddings,
            "/v1/completions" => Api::Completions,
            _ => {
                write_json(
                    reader.get_mut(),
                    404,
                    &json!({"error": {"message": "unknown path", "type": "invalid_request_error"}}),
                )
                .await?;
                continue;
            }
        };
        let rec = Recorded {
            path,
            headers,
            body: body.clone(),
        };
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(rec.clone());
        let model = body["model"].as_str().unwrap_or_default().to_owned();
        let socket = reader.get_mut();
        let anthropic = matches!(api, Api::Messages | Api::CountTokens);
        if model.contains("flaky-429") {
            let earlier = log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter(|r| r.body["model"] == model.as_str())
                .count();
            if earlier == 1 {
                // The first call of this model only: an account at its limit for a second.
                let data = json!({"error": {"message": "mock 429", "type": "rate_limit_error", "code": null}}).to_string();
                let head = format!(
                    "HTTP/1.1 429 Mock\r\nContent-Type: application/json\r\nRetry-After: 1\r\nContent-Length: {}\r\n\r\n",
                    data.len()
                );
                socket.write_all(head.as_bytes()).await?;
                socket.write_all(data.as_bytes()).await?;
                socket.flush().await?;
                continue;
            }
        }
        for (marker, status) in [
            ("fail-500", 500),
            ("fail-429", 429),
            ("fail-401", 401),
            ("fail-403", 403),
            ("fail-529", 529),
        ] {
            if !model.contains(marker) {
                continue;
            }
            if anthropic {
                let e = anthropic_error(status, &format!("mock {status}"));
                write_json(socket, status, &e).await?;
                continue 'requests;
            }
            if status != 529 {
                let e = json!({"error": {"message": format!("mock {status}"), "type": "server_error", "code": null}});
                write_json(socket, status, &e).await?;
                continue 'requests;
            }
        }
        if model.contains("fail-400") {
            if anthropic {
                let leaked = rec.header("x-api-key").unwrap_or_default().to_owned();
                let e = anthropic_error(400, &format!("bad request; you sent {leaked}"));
                write_json(socket, 400, &e).await?;
                continue;
            }
            let leaked = rec.header("authorization").unwrap_or_default().to_owned();
            let e = json!({"error": {"message": format!("bad request; you sent {leaked}"), "type": "invalid_request_error", "param": "messages", "code": "bad_messages"}});
            write_json(socket, 400, &e).await?;
            continue;
        }
        if model.contains("slow") {
            let mut probe = [0u8; 1];
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(SLOW_MS)) => {}
                read = socket.read(&mut probe) => {
                    if matches!(read, Ok(0) | Err(_)) {
                        cancelled.fetch_add(1, Ordering::SeqCst);
                        return Ok(());
                    }
                }
            }
        }
        let keep_alive = match api {
            Api::Chat => chat(socket, &model, &body).await?,
            Api::Messages => messages(socket, &model, &body).await?,
            Api::CountTokens => {
                write_json(socket, 200, &json!({"input_tokens": PROMPT_TOKENS})).await?;
                true
            }
            Api::Embeddings => embeddings(socket, &model, &body).await?,
            Api::Completions => completions(socket, &model, &body).await?,
        };
        if !keep_alive {
            return Ok(());
        }
    }
}

/// The endpoints the mock serves.
#[derive(Debug, Clone, Copy)]
enum Api {
    Chat,
    Messages,
    CountTokens,
    Embeddings,
    Completions,
}

/// `POST /v1/chat/completions`; `false` when the connection is done (after a stream).
async fn chat(socket: &mut TcpStream, model: &str, body: &Value) -> std::io::Result<bool> {
    let with_usage = !model.contains("nousage");
    let usage = usage_for(model, body);
    if body["stream"] == Value::Bool(true) {
        let wants = body["stream_options"]["include_usage"] == Value::Bool(true);
        let usage = (wants && with_usage).then_some(usage);
        if model.contains("tools") {
            tool_stream(socket, model, usage).await?;
        } else {
            stream(socket, model, usage).await?;
        }
        return Ok(false);
    }
    let mut answer = json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_753_902_335, "model": model,
        "system_fingerprint": null,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop", "logprobs": null}],
    });
    if with_usage {
        answer["usage"] = usage;
    }
    write_json(socket, 200, &answer).await?;
    Ok(true)
}

fn usage() -> Value {
    json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
           "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS, "prompt_tokens_details": {"cached_tokens": 0}})
}

/// The usage a model reports: the normal one, or one of the hostile or rule-following ones.
fn usage_for(model: &str, body: &Value) -> Value {
    let mut u = usage();
    if model.contains("obey-max") {
        let allowed = body["max_tokens"].as_u64().unwrap_or(COMPLETION_TOKENS);
        u["completion_tokens"] = json!(allowed);
        u["total_tokens"] = json!(PROMPT_TOKENS + allowed);
    } else if model.contains("tools") {
        u["completion_tokens"] = json!(TOOL_COMPLETION_TOKENS);
    } else if model.contains("usage-max") {
        u["prompt_tokens"] = json!(i64::MAX);
    } else if model.contains("usage-negative") {
        u["prompt_tokens"] = json!(-5);
        u["completion_tokens"] = json!(-7);
    } else if model.contains("usage-huge") {
        u["completion_tokens"] = json!(1_000_000_000_000_000_u64);
    }
    if model.contains("cached") {
        u["prompt_tokens_details"]["cached_tokens"] = json!(CACHED_TOKENS);
    }
    u
}

async fn write_json(socket: &mut TcpStream, status: u16, body: &Value) -> std::io::Result<()> {
    let data = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} Mock\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(data.as_bytes()).await?;
    socket.flush().await
}

async fn chunk(socket: &mut TcpStream, data: &str) -> std::io::Result<()> {
    let framed = format!("{:x}\r\n{data}\r\n", data.len());
    socket.write_all(framed.as_bytes()).await?;
    socket.flush().await
}

fn event(model: &str, delta: &Value, finish: Value) -> String {
    let c = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_753_902_335, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]});
    format!("data: {c}\n\n")
}

const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

/// The end of a stream: the usage chunk when asked, `[DONE]` and the last chunk.
async fn end_stream(
    socket: &mut TcpStream,
    model: &str,
    usage: Option<Value>,
) -> std::io::Result<()> {
    if let Some(usage) = usage {
        let c = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_753_902_335, "model": model,
                       "choices": [], "usage": usage});
        chunk(socket, &format!("data: {c}\n\n")).await?;
    }
    chunk(socket, "data: [DONE]\n\n").await?;
    socket.write_all(b"0\r\n\r\n").await?;
    socket.flush().await
}

/// A stream whose answer is only a tool call: no `content`, just function arguments.
async fn tool_stream(
    socket: &mut TcpStream,
    model: &str,
    usage: Option<Value>,
) -> std::io::Result<()> {
    socket.write_all(STREAM_HEAD).await?;
    let first = json!({"role": "assistant", "content": null, "tool_calls": [
        {"index": 0, "id": "call_mock", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]});
    chunk(socket, &event(model, &first, Value::Null)).await?;
    for i in 0..TOOL_ARGUMENT_CHUNKS {
        let piece = format!("{{\"city_{i:03}\": \"Hangzhou\", \"d\": 1}},");
        let delta = json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
        chunk(socket, &event(model, &delta, Value::Null)).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    chunk(socket, &event(model, &json!({}), json!("tool_calls"))).await?;
    end_stream(socket, model, usage).await
}

async fn stream(socket: &mut TcpStream, model: &str, usage: Option<Value>) -> std::io::Result<()> {
    socket.write_all(STREAM_HEAD).await?;
    for (i, piece) in pieces(model).iter().enumerate() {
        let mut delta = json!({"content": piece});
        if i == 0 {
            delta["role"] = json!("assistant");
        }
        chunk(socket, &event(model, &delta, Value::Null)).await?;
        if i == 1 && model.contains("stall") {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if i == 1 && model.contains("close") {
            // Drop the connection without the terminating chunk.
            return socket.shutdown().await;
        }
        tokio::time::sleep(Duration::from_millis(if model.contains("long") {
            10
        } else {
            2
        }))
        .await;
    }
    chunk(socket, &event(model, &json!({}), json!("stop"))).await?;
    end_stream(socket, model, usage).await
}

/// The pieces a text stream sends: [`REPLY`] 6 characters at a time, or [`LONG_CHUNKS`]
/// short pieces for the `long` model.
fn pieces(model: &str) -> Vec<String> {
    if model.contains("long") {
        (0..LONG_CHUNKS).map(|i| format!("第{i}段")).collect()
    } else {
        let chars: Vec<char> = REPLY.chars().collect();
        chars.chunks(6).map(|c| c.iter().collect()).collect()
    }
}

/// After piece `i` of a stream: the `stall` and `close` behaviours after the second piece, else
/// a short pause. `false` when the connection was dropped.
async fn between_pieces(socket: &mut TcpStream, model: &str, i: usize) -> std::io::Result<bool> {
    if i == 1 && model.contains("stall") {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if i == 1 && model.contains("close") {
        // Drop the connection without the terminating chunk.
        socket.shutdown().await?;
        return Ok(false);
    }
    let pause = if model.contains("long") { 10 } else { 2 };
    tokio::time::sleep(Duration::from_millis(pause)).await;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Anthropic's Messages API.

/// An Anthropic error body, typed by status as Anthropic does.
fn anthropic_error(status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// The usage a model reports on `/v1/messages`: [`usage_for`]'s counts in Anthropic's
/// spelling (`input_tokens` excludes cache reads and writes).
fn anthropic_usage(model: &str, body: &Value) -> Value {
    let u = usage_for(model, body);
    let mut a = json!({"input_tokens": u["prompt_tokens"], "cache_creation_input_tokens": 0,
                       "cache_read_input_tokens": 0, "output_tokens": u["completion_tokens"]});
    if model.contains("cached") {
        a["input_tokens"] = json!(PROMPT_TOKENS - CACHED_TOKENS - CACHE_WRITE_TOKENS);
        a["cache_read_input_tokens"] = json!(CACHED_TOKENS);
        a["cache_creation_input_tokens"] = json!(CACHE_WRITE_TOKENS);
    }
    a
}

/// The `input_json_delta` pieces of the `tools` model's call: [`TOOL_ARGUMENT_CHUNKS`] pieces
/// that join into one JSON object (SDKs parse the partial JSON as it arrives).
fn tool_argument_pieces() -> Vec<String> {
    (0..TOOL_ARGUMENT_CHUNKS)
        .map(|i| {
            let sep = if i == 0 { "{" } else { ", " };
            let end = if i + 1 == TOOL_ARGUMENT_CHUNKS {
                "}"
            } else {
                ""
            };
            format!("{sep}\"city_{i:03}\": \"Hangzhou\"{end}")
        })
        .collect()
}

/// The `input` of the `tools` model's `tool_use` block on `/v1/messages` (what its streamed
/// pieces join into).
#[must_use]
pub fn tool_input() -> Value {
    serde_json::from_str(&tool_argument_pieces().concat()).unwrap_or_default()
}

/// `POST /v1/messages`; `false` when the connection is done (after a stream).
async fn messages(socket: &mut TcpStream, model: &str, body: &Value) -> std::io::Result<bool> {
    let usage = (!model.contains("nousage")).then(|| anthropic_usage(model, body));
    let tools = model.contains("tools");
    if body["stream"] == Value::Bool(true) {
        messages_stream(socket, model, usage, tools).await?;
        return Ok(false);
    }
    let content = if tools {
        json!([{"type": "text", "text": TOOL_PREAMBLE},
               {"type": "tool_use", "id": "toolu_mock", "name": TOOL_NAME, "input": tool_input()}])
    } else {
        json!([{"type": "text", "text": REPLY}])
    };
    let mut answer = json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": if tools { "tool_use" } else { "end_turn" }, "stop_sequence": null,
    });
    if let Some(usage) = usage {
        answer["usage"] = usage;
    }
    write_json(socket, 200, &answer).await?;
    Ok(true)
}

/// One Anthropic SSE event, named by its `type`.
async fn anthropic_event(socket: &mut TcpStream, data: &Value) -> std::io::Result<()> {
    let name = data["type"].as_str().unwrap_or("message");
    chunk(socket, &format!("event: {name}\ndata: {data}\n\n")).await
}

/// Anthropic's stream: `message_start` (input counts, `output_tokens` 1 as Anthropic sends),
/// `ping`, the blocks, `message_delta` (stop reason, final `output_tokens`), `message_stop`.
async fn messages_stream(
    socket: &mut TcpStream,
    model: &str,
    usage: Option<Value>,
    tools: bool,
) -> std::io::Result<()> {
    socket.write_all(STREAM_HEAD).await?;
    let mut message = json!({"id": "msg_mock", "type": "message", "role": "assistant", "content": [],
                             "model": model, "stop_reason": null, "stop_sequence": null});
    if let Some(u) = &usage {
        let mut start = u.clone();
        start["output_tokens"] = json!(1);
        message["usage"] = start;
    }
    anthropic_event(
        socket,
        &json!({"type": "message_start", "message": message}),
    )
    .await?;
    anthropic_event(socket, &json!({"type": "ping"})).await?;
    let text_start = json!({"type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""}});
    anthropic_event(socket, &text_start).await?;
    if tools {
        let d = json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": TOOL_PREAMBLE}});
        anthropic_event(socket, &d).await?;
        anthropic_event(socket, &json!({"type": "content_block_stop", "index": 0})).await?;
        let start = json!({"type": "content_block_start", "index": 1, "content_block":
                           {"type": "tool_use", "id": "toolu_mock", "name": TOOL_NAME, "input": {}}});
        anthropic_event(socket, &start).await?;
        for piece in tool_argument_pieces() {
            let d = json!({"type": "content_block_delta", "index": 1,
                           "delta": {"type": "input_json_delta", "partial_json": piece}});
            anthropic_event(socket, &d).await?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        anthropic_event(socket, &json!({"type": "content_block_stop", "index": 1})).await?;
    } else {
        for (i, piece) in pieces(model).iter().enumerate() {
            let d = json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": piece}});
            anthropic_event(socket, &d).await?;
            if !between_pieces(socket, model, i).await? {
                return Ok(());
            }
        }
        anthropic_event(socket, &json!({"type": "content_block_stop", "index": 0})).await?;
    }
    let mut delta = json!({"type": "message_delta",
                           "delta": {"stop_reason": if tools { "tool_use" } else { "end_turn" }, "stop_sequence": null}});
    if let Some(u) = &usage {
        delta["usage"] = json!({"output_tokens": u["output_tokens"]});
    }
    anthropic_event(socket, &delta).await?;
    anthropic_event(socket, &json!({"type": "message_stop"})).await?;
    socket.write_all(b"0\r\n\r\n").await?;
    socket.flush().await
}

// ---------------------------------------------------------------------------------------------
// Embeddings.

/// The token count of each embeddings input: a string counts one token per character (Unicode
/// scalar value), a token array one per token. `None` when `input` is not a non-empty string,
/// array of strings, token array or array of token arrays.
fn embedding_inputs(input: &Value) -> Option<Vec<u64>> {
    let is_token = |v: &Value| v.is_u64();
    match input {
        Value::String(s) => Some(vec![s.chars().count() as u64]),
        Value::Array(items) if !items.is_empty() && items.iter().all(is_token) => {
            Some(vec![items.len() as u64])
        }
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Some(s.chars().count() as u64),
                Value::Array(t) if !t.is_empty() && t.iter().all(is_token) => Some(t.len() as u64),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// The `usage.prompt_tokens` the mock reports for an embeddings `input`: one token per
/// character of each string, one per token of each token array (`None` for an input it
/// refuses with 400).
#[must_use]
pub fn embedding_tokens(input: &Value) -> Option<u64> {
    embedding_inputs(input).map(|counts| counts.iter().sum())
}

/// The vector of input `i`: small multiples of 1/8, exact in `f32` and in JSON.
#[must_use]
pub fn embedding_vector(i: usize, dims: usize) -> Vec<f32> {
    (0..dims)
        .map(|j| ((i * 3 + j) % 7) as f32 / 8.0 - 0.375)
        .collect()
}

/// `POST /v1/embeddings`.
async fn embeddings(socket: &mut TcpStream, model: &str, body: &Value) -> std::io::Result<bool> {
    let Some(counts) = embedding_inputs(&body["input"]) else {
        let e = json!({"error": {"message": "'input' must be a non-empty string, array of strings or array of token arrays",
                                 "type": "invalid_request_error", "param": "input", "code": null}});
        write_json(socket, 400, &e).await?;
        return Ok(true);
    };
    let dims = body["dimensions"]
        .as_u64()
        .map_or(EMBEDDING_DIMENSIONS, |d| {
            usize::try_from(d).unwrap_or(MAX_EMBEDDING_DIMENSIONS)
        })
        .clamp(1, MAX_EMBEDDING_DIMENSIONS);
    let base64 = body["encoding_format"] == "base64";
    let data: Vec<Value> = (0..counts.len())
        .map(|i| {
            let v = embedding_vector(i, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = counts.iter().sum();
    let mut answer = json!({"object": "list", "data": data, "model": model});
    if !model.contains("nousage") {
        let mut usage = json!({"prompt_tokens": tokens, "total_tokens": tokens});
        if model.contains("usage-max") {
            usage["prompt_tokens"] = json!(i64::MAX);
        } else if model.contains("usage-negative") {
            usage["prompt_tokens"] = json!(-5);
        }
        answer["usage"] = usage;
    }
    write_json(socket, 200, &answer).await?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Legacy text completions.

fn completion_chunk(model: &str, text: &str, finish: Value) -> Value {
    json!({"id": "cmpl-mock", "object": "text_completion", "created": 1_753_902_335, "model": model,
           "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]})
}

/// `POST /v1/completions`; `false` when the connection is done (after a stream).
async fn completions(socket: &mut TcpStream, model: &str, body: &Value) -> std::io::Result<bool> {
    let with_usage = !model.contains("nousage");
    let usage = usage_for(model, body);
    if body["stream"] != Value::Bool(true) {
        let mut answer = completion_chunk(model, REPLY, json!("stop"));
        if with_usage {
            answer["usage"] = usage;
        }
        write_json(socket, 200, &answer).await?;
        return Ok(true);
    }
    socket.write_all(STREAM_HEAD).await?;
    for (i, piece) in pieces(model).iter().enumerate() {
        let c = completion_chunk(model, piece, Value::Null);
        chunk(socket, &format!("data: {c}\n\n")).await?;
        if !between_pieces(socket, model, i).await? {
            return Ok(false);
        }
    }
    let c = completion_chunk(model, "", json!("stop"));
    chunk(socket, &format!("data: {c}\n\n")).await?;
    let wants = body["stream_options"]["include_usage"] == Value::Bool(true);
    if wants && with_usage {
        let mut c = completion_chunk(model, "", Value::Null);
        c["choices"] = json!([]);
        c["usage"] = usage;
        chunk(socket, &format!("data: {c}\n\n")).await?;
    }
    chunk(socket, "data: [DONE]\n\n").await?;
    socket.write_all(b"0\r\n\r\n").await?;
    socket.flush().await?;
    Ok(false)
}
