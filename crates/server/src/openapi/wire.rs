//! The relay's request and answer bodies as `/openapi.json` shows them: the fields Tollgate
//! itself reads (to route, hold, limit and bill a call), with the rules it applies to them.
//! Every other field passes to the upstream untouched, so every object here allows additional
//! properties. These are documentation types only: the relay parses bodies itself
//! (`tollgate_relay::wire` and `call`), and a test checks that the completion limits listed
//! here are the ones it reads.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `POST /v1/chat/completions` body (OpenAI's format).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// Public model name, as `GET /v1/models` lists it.
    pub model: String,
    /// At least one message; each an object.
    pub messages: Vec<ChatMessage>,
    /// `true`: the answer is a server-sent event stream.
    pub stream: Option<bool>,
    /// Tollgate always asks the upstream for usage on streams; the usage chunk reaches the
    /// client only when `include_usage` is `true`.
    pub stream_options: Option<StreamOptions>,
    /// A completion limit. The hold covers the prompt plus the largest of `max_tokens`,
    /// `max_completion_tokens`, `max_output_tokens` and `max_new_tokens` (each a non-negative
    /// integer), or the configured default when none is set.
    pub max_tokens: Option<u64>,
    /// See `max_tokens`.
    pub max_completion_tokens: Option<u64>,
    /// See `max_tokens`.
    pub max_output_tokens: Option<u64>,
    /// See `max_tokens`.
    pub max_new_tokens: Option<u64>,
    /// Choices to generate, 1 to 128 (default 1); each may use the completion limit.
    #[schema(minimum = 1, maximum = 128)]
    pub n: Option<u64>,
    /// Any other field: passed through.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A chat message.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, …
    pub role: String,
    /// Text, or an array of content parts; parts other than text (images, audio, files) are
    /// held at a larger estimate, since their tokens do not show in the body's size.
    pub content: Option<Value>,
    /// Any other field: passed through.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `stream_options`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Show the final usage chunk to the client.
    pub include_usage: Option<bool>,
    /// Any other field: passed through.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `POST /v1/completions` body (OpenAI's legacy text completions).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CompletionRequest {
    /// Public model name.
    pub model: String,
    /// A string, an array of strings, an array of token ids, or an array of token-id arrays.
    pub prompt: Value,
    /// `true`: a server-sent event stream.
    pub stream: Option<bool>,
    /// As for chat completions.
    pub stream_options: Option<StreamOptions>,
    /// The completion limit per choice (see chat completions for the other spellings).
    pub max_tokens: Option<u64>,
    /// 1 to 128 (default 1).
    #[schema(minimum = 1, maximum = 128)]
    pub n: Option<u64>,
    /// 1 to 128 (default 1): completions generated upstream, each held.
    #[schema(minimum = 1, maximum = 128)]
    pub best_of: Option<u64>,
    /// Any other field: passed through.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `POST /v1/embeddings` body, billed by its input tokens at the model's `input` price.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    /// Public model name.
    pub model: String,
    /// A string, an array of strings, an array of token ids, or an array of token-id arrays.
    pub input: Value,
    /// Must not be `true`: embeddings are not streamed.
    pub stream: Option<bool>,
    /// `encoding_format`, `dimensions` and the rest pass through.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `POST /v1/messages` body (Anthropic's Messages API).
#[derive(Debug, Deserialize, ToSchema)]
pub struct MessagesRequest {
    /// Public model name; served natively by `anthropic` channels, converted for the others.
    pub model: String,
    /// Required, at least 1: the completion limit, which the hold covers.
    #[schema(minimum = 1)]
    pub max_tokens: u64,
    /// The conversation: text, image and `tool_use`/`tool_result` blocks.
    pub messages: Vec<AnthropicMessage>,
    /// A string or an array of text blocks.
    pub system: Option<Value>,
    /// `true`: Anthropic's event stream (`message_start` … `message_stop`).
    pub stream: Option<bool>,
    /// `temperature`, `top_p`, `stop_sequences`, `tools`, `tool_choice`, `metadata` and the rest
    /// are converted for channels that do not speak Anthropic's API.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A Messages API message.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AnthropicMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// Text or an array of content blocks.
    pub content: Value,
    /// Any other field: passed through.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `POST /v1/messages/count_tokens` body: a Messages request without `max_tokens`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CountTokensRequest {
    /// Public model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<AnthropicMessage>,
    /// A string or an array of text blocks.
    pub system: Option<Value>,
    /// Any other field: passed through.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// The usage Tollgate bills (from the upstream's own count; from its tokenizer when absent or
/// not believable).
#[derive(Debug, Deserialize, ToSchema)]
pub struct OpenAiUsage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens (absent for embeddings).
    pub completion_tokens: Option<u64>,
    /// Their sum.
    pub total_tokens: u64,
    /// `cached_tokens` here are billed at the model's `cached_input` price.
    pub prompt_tokens_details: Option<Value>,
    /// Any other field: passed through.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A chat completion (or, streamed, `chat.completion.chunk` events ending with `data: [DONE]`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletion {
    /// The upstream's id.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// The public model name the client asked for.
    pub model: String,
    /// The answers.
    pub choices: Vec<Value>,
    /// What the call was billed for.
    pub usage: Option<OpenAiUsage>,
    /// Any other field: passed through.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A legacy text completion (or, streamed, its events).
#[derive(Debug, Deserialize, ToSchema)]
pub struct Completion {
    /// The upstream's id.
    pub id: String,
    /// `text_completion`.
    pub object: String,
    /// The public model name.
    pub model: String,
    /// The answers.
    pub choices: Vec<Value>,
    /// What the call was billed for.
    pub usage: Option<OpenAiUsage>,
    /// Any other field: passed through.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Embeddings.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingList {
    /// `list`.
    pub object: String,
    /// One embedding per input.
    pub data: Vec<Value>,
    /// The public model name.
    pub model: String,
    /// What the call was billed for (input tokens).
    pub usage: Option<OpenAiUsage>,
    /// Any other field: passed through.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// An Anthropic message (or, streamed, Anthropic's events).
#[derive(Debug, Deserialize, ToSchema)]
pub struct AnthropicMessageResponse {
    /// The message id.
    pub id: String,
    /// `message`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `assistant`.
    pub role: String,
    /// Content blocks (`text`, `tool_use`, …).
    pub content: Vec<Value>,
    /// The public model name.
    pub model: String,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, …
    pub stop_reason: Option<String>,
    /// The stop sequence met, if any.
    pub stop_sequence: Option<String>,
    /// `input_tokens`, `output_tokens`, `cache_read_input_tokens` (billed at `cached_input`), …
    pub usage: Value,
    /// Any other field: passed through.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}
