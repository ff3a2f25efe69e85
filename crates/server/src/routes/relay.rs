//! The OpenAI-compatible relay API (SPEC §4): `POST /v1/chat/completions` and
//! `GET /v1/models`. Handlers read the body (with the relay's own size limit), hand it to the
//! gateway and turn its answer into a JSON or SSE response; errors are OpenAI-shaped.

use crate::auth::bearer;
use crate::error::OpenAiError;
use crate::startup::RequestId;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::Serialize;
use tollgate_relay::{ChatReply, Gateway};

/// Largest relay request body, from `TOLLGATE_RELAY_BODY_LIMIT`.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Registers the routes (under `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/chat/completions", web::post().to(chat))
        .route("/models", web::get().to(models));
}

/// Reads the whole body, refusing it as soon as it passes `limit`.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, OpenAiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(OpenAiError::payload_too_large(limit));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(OpenAiError::bad_body)?;
        if body.len() + chunk.len() > limit {
            return Err(OpenAiError::payload_too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

async fn chat(
    req: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    limit: web::Data<BodyLimit>,
) -> Result<HttpResponse, OpenAiError> {
    let body = read_body(&req, payload, limit.0).await?;
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    match gateway.chat(bearer(&req), &body, &request_id).await? {
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
