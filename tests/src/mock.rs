//! A mock LLM provider: a real HTTP/1.1 server on a random port speaking the OpenAI
//! chat-completions wire format — JSON answers, SSE streams (chunked, with the usage chunk when
//! asked), OpenAI-shaped errors — and the failure modes the relay must survive: slow first byte,
//! a stream that stalls, a connection closed mid-stream. It records every request so tests can
//! check what the gateway forwarded and how many calls got through.
//!
//! The upstream model name picks the behaviour (a channel's `model_mapping` points a public name
//! at one of these):
//!
//! | model contains | behaviour |
//! |---|---|
//! | `fail-500`, `fail-429`, `fail-401`, `fail-403` | that status with an OpenAI error |
//! | `fail-400` | 400 whose message echoes the `Authorization` header it got (a leaky provider) |
//! | `slow` | waits [`SLOW_MS`] before answering; a client that hangs up meanwhile is counted in [`MockProvider::cancelled`] |
//! | `obey-max` | reports as many completion tokens as `max_tokens` allows (as DeepSeek and DashScope honour it) |
//! | `tools` | streams only `tool_calls` arguments ([`TOOL_ARGUMENT_CHUNKS`] pieces of 25 characters, 5 ms apart), usage [`TOOL_COMPLETION_TOKENS`] |
//! | `usage-max`, `usage-negative`, `usage-huge` | reports `prompt_tokens` 2^63−1; negative counts; 10^15 completion tokens |
//! | `stall` | streams two chunks, then sends nothing more |
//! | `close` | streams two chunks, then drops the connection (no `[DONE]`, no usage) |
//! | `nousage` | answers without any `usage` |
//! | `long` | streams [`LONG_CHUNKS`] chunks 10 ms apart |
//! | anything else | success: [`PROMPT_TOKENS`] + [`COMPLETION_TOKENS`] tokens |

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

    /// Every chat request received so far.
    #[must_use]
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many chat requests named this upstream model.
    #[must_use]
    pub fn calls_for(&self, model: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.body["model"] == model)
            .count()
    }

    /// How many chat requests arrived.
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
        if path.split('?').next() != Some("/v1/chat/completions") {
            write_json(
                reader.get_mut(),
                404,
                &json!({"error": {"message": "unknown path", "type": "invalid_request_error"}}),
            )
            .await?;
            continue;
        }
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
        for (marker, status) in [
            ("fail-500", 500),
            ("fail-429", 429),
            ("fail-401", 401),
            ("fail-403", 403),
        ] {
            if model.contains(marker) {
                let e = json!({"error": {"message": format!("mock {status}"), "type": "server_error", "code": null}});
                write_json(socket, status, &e).await?;
                continue 'requests;
            }
        }
        if model.contains("fail-400") {
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
        let with_usage = !model.contains("nousage");
        let usage = usage_for(&model, &body);
        if body["stream"] == Value::Bool(true) {
            let wants = body["stream_options"]["include_usage"] == Value::Bool(true);
            let usage = (wants && with_usage).then_some(usage);
            if model.contains("tools") {
                tool_stream(socket, &model, usage).await?;
            } else {
                stream(socket, &model, usage).await?;
            }
            return Ok(());
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
    }
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
    let chars: Vec<char> = REPLY.chars().collect();
    let pieces: Vec<String> = if model.contains("long") {
        (0..LONG_CHUNKS).map(|i| format!("第{i}段")).collect()
    } else {
        chars.chunks(6).map(|c| c.iter().collect()).collect()
    };
    for (i, piece) in pieces.iter().enumerate() {
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
