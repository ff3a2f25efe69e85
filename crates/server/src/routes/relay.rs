//! The OpenAI-compatible relay API (SPEC §4): `POST /v1/chat/completions` and
//! `GET /v1/models`. Handlers check the key first, then read the body (with the relay's own size
//! limit and deadline), hand it to the gateway and turn its answer into a JSON or SSE response;
//! errors are OpenAI-shaped.
//!
//! The key comes before the body so that a stranger cannot make Tollgate buffer megabytes: an
//! unknown key is answered (and the connection closed) without reading a byte of the body.

use crate::auth::bearer;
use crate::error::OpenAiError;
use crate::startup::RequestId;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::Serialize;
use tollgate_relay::{ChatReply, Gateway};

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

/// Registers the routes (under `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/chat/completions", web::post().to(chat))
        .route("/models", web::get().to(models));
}

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

async fn chat(
    req: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    limit: web::Data<BodyLimit>,
) -> Result<HttpResponse, OpenAiError> {
    let token = gateway.authenticate(bearer(&req)).await?;
    let body = read_body(&req, payload, *limit.get_ref()).await?;
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    match gateway.chat(token, body, &request_id).await? {
        ChatReply::Json { status, body } => Ok(HttpResponse::build(
            actix_web::http::StatusCode::from_u16(status)
                .unwrap_or(actix_web::http::StatusCode::OK),
        )
        .insert_header(ContentType::json())
        .body(body)),
        ChatReply::Stream(events) => Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "text/event-stream"))
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            // Proxies such as nginx must not buffer the stream.
            .insert_header(("X-Accel-Buffering", "no"))
            .streaming(events)),
    }
}

#[derive(Serialize)]
struct ModelList {
    object: &'static str,
    data: Vec<ModelEntry>,
}

#[derive(Serialize)]
struct ModelEntry {
    id: String,
    object: &'static str,
    created: i64,
    owned_by: &'static str,
}

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
