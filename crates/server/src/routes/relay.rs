//! The relay APIs (SPEC §4, §4.2, §4.3): OpenAI's `POST /v1/chat/completions`,
//! `/v1/embeddings`, `/v1/completions` and `GET /v1/models`, and Anthropic's `POST /v1/messages`
//! and `/v1/messages/count_tokens`. Handlers check the key first, then read the body (with the
//! relay's own size limit and deadline), hand it to the gateway and turn its answer into a JSON
//! or SSE response; errors are in the shape of the client's API.
//!
//! The key comes before the body so that a stranger cannot make Tollgate buffer megabytes: an
//! unknown key is answered (and the connection closed) without reading a byte of the body.
//!
//! Each relayed call runs inside its request's tracing span (opened by the `request_context`
//! middleware, [`crate::request_id`]); the handler records the call's route and key id into it
//! (see [`relay`]), the gateway its model and channel, so every line logged for the call, here,
//! in the gateway, in its stream or its settlement, carries them with the request id.

use crate::auth::bearer;
use crate::error::{AnthropicError, OpenAiError};
use crate::openapi::wire::{
    AnthropicMessageResponse, ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest,
    CountTokensRequest, EmbeddingList, EmbeddingRequest, MessagesRequest,
};
use crate::openapi::{AnthropicCountErrors, AnthropicErrors, OpenAiErrors, OpenAiKeyErrors};
use crate::request_id::RequestId;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use futures_util::StreamExt;
use serde::Serialize;
use tollgate_domain::channel::Api;
use tollgate_relay::{ChatReply, Gateway, RateHeaders};
use utoipa::ToSchema;

/// How relay request bodies are read: `TOLLGATE_RELAY_BODY_LIMIT` and
/// `TOLLGATE_RELAY_BODY_TIMEOUT_SECS`.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    /// Largest body in bytes.
    pub bytes: usize,
    /// Longest time to receive it.
    pub deadline: std::time::Duration,
}

/// Memory reserved up front for a body, whatever length it declares: the rest grows as bytes
/// actually arrive.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;

super::routes!(
    chat_completions,
    completions,
    embeddings,
    messages,
    count_tokens,
    models
);

/// Reads the whole body within the deadline, refusing it as soon as it passes the limit (or
/// at once when its declared length does).
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: BodyLimit,
) -> Result<web::Bytes, OpenAiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.bytes as u64) {
        return Err(OpenAiError::payload_too_large(limit.bytes));
    }
    let capacity = declared
        .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
        .min(INITIAL_BODY_CAPACITY);
    let read = async {
        let mut body = web::BytesMut::with_capacity(capacity);
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(OpenAiError::bad_body)?;
            if body.len() + chunk.len() > limit.bytes {
                return Err(OpenAiError::payload_too_large(limit.bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(limit.deadline, read)
        .await
        .map_err(|_| OpenAiError::body_timeout(limit.deadline))?
}

/// OpenAI's `x-ratelimit-*` headers for a key's limits and what is left of them (only for the
/// limits that are set), which the official SDKs read to back off by themselves.
fn rate_limit_headers(rate: &RateHeaders) -> Vec<(&'static str, String)> {
    let reset = format!("{}s", rate.headroom.reset_ms / 1000);
    let mut out = Vec::new();
    if let Some(rpm) = rate.limits.rpm {
        out.push(("x-ratelimit-limit-requests", rpm.to_string()));
        out.push((
            "x-ratelimit-remaining-requests",
            rate.headroom.remaining_requests.unwrap_or(0).to_string(),
        ));
        out.push(("x-ratelimit-reset-requests", reset.clone()));
    }
    if let Some(tpm) = rate.limits.tpm {
        out.push(("x-ratelimit-limit-tokens", tpm.to_string()));
        out.push((
            "x-ratelimit-remaining-tokens",
            rate.headroom.remaining_tokens.unwrap_or(0).to_string(),
        ));
        out.push(("x-ratelimit-reset-tokens", reset));
    }
    out
}

/// Anthropic clients send the key in `x-api-key`; `Authorization: Bearer` works too.
fn anthropic_key(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .or_else(|| bearer(req))
}

/// The API's name in logs (the `route` field of a call's request span).
fn route_name(api: Api) -> &'static str {
    match api {
        Api::Chat => "chat",
        Api::Messages => "messages",
        Api::Embeddings => "embeddings",
        Api::Completions => "completions",
    }
}

/// Key, body, the gateway's answer as a response, inside the request's span: the route and,
/// once the key is checked, its id (never the key) are recorded into it here; the gateway
/// records the model and channel and carries the span into the stream and the settlement.
/// One span a call, not a `call` span inside the request's: a span costs its fields'
/// formatting and a slot in the registry, and every poll enters and leaves it — about 5% of a
/// call's instructions for the second span (docs/benchmarks.md, tenth session).
async fn relay(
    api: Api,
    key: Option<&str>,
    req: &HttpRequest,
    payload: web::Payload,
    gateway: &Gateway,
    limit: BodyLimit,
) -> Result<HttpResponse, OpenAiError> {
    let request_id = RequestId::of(req)?;
    let span = tracing::Span::current();
    span.record("route", route_name(api));
    let token = gateway.authenticate(key).await?;
    span.record("token_id", token.id.get());
    let body = read_body(req, payload, limit).await?;
    let with_rate = |res: &mut actix_web::HttpResponseBuilder, rate: Option<RateHeaders>| {
        for (name, value) in rate.iter().flat_map(rate_limit_headers) {
            res.insert_header((name, value));
        }
    };
    match gateway.call(api, token, body, request_id.as_str()).await? {
        ChatReply::Json { status, body, rate } => {
            let mut res = HttpResponse::build(
                actix_web::http::StatusCode::from_u16(status)
                    .unwrap_or(actix_web::http::StatusCode::OK),
            );
            with_rate(&mut res, rate);
            Ok(res.insert_header(ContentType::json()).body(body))
        }
        ChatReply::Stream { events, rate } => {
            let mut res = HttpResponse::Ok();
            with_rate(&mut res, rate);
            Ok(res
                .insert_header((header::CONTENT_TYPE, "text/event-stream"))
                .insert_header((header::CACHE_CONTROL, "no-cache"))
                // Proxies such as nginx must not buffer the stream.
                .insert_header(("X-Accel-Buffering", "no"))
                .streaming(events))
        }
    }
}

/// Chat completions (OpenAI's API), streamed or not, routed to any channel serving the model
/// (converted for `anthropic` channels) and billed for the tokens used.
#[utoipa::path(
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The answer; with `stream: true` a server-sent event stream of `chat.completion.chunk` events ending with `data: [DONE]`", content(
            (ChatCompletion = "application/json"),
            (String = "text/event-stream"),
        )),
        OpenAiErrors,
    ),
    security(("api_key" = [])),
)]
#[post("/chat/completions")]
async fn chat_completions(
    req: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    limit: web::Data<BodyLimit>,
) -> Result<HttpResponse, OpenAiError> {
    openai(Api::Chat, req, payload, gateway, limit).await
}

/// Legacy text completions (OpenAI's API), streamed or not.
#[utoipa::path(
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "The answer; with `stream: true` a server-sent event stream", content(
            (Completion = "application/json"),
            (String = "text/event-stream"),
        )),
        OpenAiErrors,
    ),
    security(("api_key" = [])),
)]
#[post("/completions")]
async fn completions(
    req: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    limit: web::Data<BodyLimit>,
) -> Result<HttpResponse, OpenAiError> {
    openai(Api::Completions, req, payload, gateway, limit).await
}

/// Embeddings (OpenAI's API), billed by their input tokens.
#[utoipa::path(
    request_body = EmbeddingRequest,
    responses(
        (status = 200, description = "The embeddings", body = EmbeddingList),
        OpenAiErrors,
    ),
    security(("api_key" = [])),
)]
#[post("/embeddings")]
async fn embeddings(
    req: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    limit: web::Data<BodyLimit>,
) -> Result<HttpResponse, OpenAiError> {
    openai(Api::Embeddings, req, payload, gateway, limit).await
}

/// The OpenAI-format routes' one body: Bearer key, OpenAI errors.
async fn openai(
    api: Api,
    req: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    limit: web::Data<BodyLimit>,
) -> Result<HttpResponse, OpenAiError> {
    relay(api, bearer(&req), &req, payload, &gateway, **limit).await
}

/// Anthropic's Messages API, streamed or not: natively to `anthropic` channels, converted to
/// and from chat completions for the others. `anthropic-version` is accepted.
#[utoipa::path(
    request_body = MessagesRequest,
    responses(
        (status = 200, description = "The message; with `stream: true` Anthropic's events (`message_start`, `content_block_start`, `content_block_delta`, `content_block_stop`, `message_delta` with usage, `message_stop`)", content(
            (AnthropicMessageResponse = "application/json"),
            (String = "text/event-stream"),
        )),
        AnthropicErrors,
    ),
    security(("anthropic_api_key" = []), ("api_key" = [])),
)]
#[post("/messages")]
async fn messages(
    req: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    limit: web::Data<BodyLimit>,
) -> Result<HttpResponse, AnthropicError> {
    Ok(relay(
        Api::Messages,
        anthropic_key(&req),
        &req,
        payload,
        &gateway,
        **limit,
    )
    .await?)
}

/// `POST /v1/messages/count_tokens` answer.
#[derive(Serialize, ToSchema)]
struct TokenCount {
    /// The prompt's tokens, as Tollgate estimates them for its holds.
    input_tokens: u64,
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens, as Tollgate estimates them for its
/// holds (no charge).
#[utoipa::path(
    request_body = CountTokensRequest,
    responses((status = 200, body = TokenCount), AnthropicCountErrors),
    security(("anthropic_api_key" = []), ("api_key" = [])),
)]
#[post("/messages/count_tokens")]
async fn count_tokens(
    req: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    limit: web::Data<BodyLimit>,
) -> Result<HttpResponse, AnthropicError> {
    gateway
        .authenticate(anthropic_key(&req))
        .await
        .map_err(OpenAiError::from)?;
    let body = read_body(&req, payload, **limit).await?;
    let input_tokens = gateway
        .count_tokens(body)
        .await
        .map_err(OpenAiError::from)?;
    Ok(HttpResponse::Ok().json(TokenCount { input_tokens }))
}

/// `GET /v1/models` answer.
#[derive(Serialize, ToSchema)]
struct ModelList {
    /// `list`.
    object: &'static str,
    data: Vec<ModelEntry>,
}

/// A model some enabled channel serves.
#[derive(Serialize, ToSchema)]
struct ModelEntry {
    /// The public model name.
    id: String,
    /// `model`.
    object: &'static str,
    /// Always 0.
    created: i64,
    /// `tollgate`.
    owned_by: &'static str,
}

/// The models some enabled channel serves (OpenAI's format).
#[utoipa::path(
    responses((status = 200, body = ModelList), OpenAiKeyErrors),
    security(("api_key" = [])),
)]
#[get("/models")]
async fn models(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
) -> Result<HttpResponse, OpenAiError> {
    let models = gateway.models(bearer(&req)).await?;
    Ok(HttpResponse::Ok().json(ModelList {
        object: "list",
        data: models
            .into_iter()
            .map(|id| ModelEntry {
                id,
                object: "model",
                created: 0,
                owned_by: "tollgate",
            })
            .collect(),
    }))
}
