//! The external user API (SPEC §3), under `/api/user/external`.

use crate::auth::Platform;
use crate::clock::now;
use crate::dto::{
    DeleteTokenRequest, DeletedTokenData, Envelope, IssuedTokenData, LogsData, LogsQuery,
    ModelPriceView, StatsData, SyncData, SyncRequest, TokenRequest, TopUpData, TopUpRequest,
};
use crate::error::{ApiError, ErrorEnvelope};
use crate::openapi::{EnvelopeBodyErrors, EnvelopeErrors};
use actix_web::{HttpResponse, delete, get, post, web};
use tollgate_domain::service::ExternalUserService;
use tollgate_relay::Gateway;

type Service = web::Data<ExternalUserService>;

fn ok<T: serde::Serialize>(message: &'static str, data: T) -> HttpResponse {
    HttpResponse::Ok().json(Envelope::ok(message, data))
}

super::routes!(
    sync,
    top_up,
    create_token,
    delete_token,
    models,
    stats,
    logs
);

/// Creates the user, or updates the fields present (`is_new_user` tells which). Never touches
/// quota, usage or keys.
#[utoipa::path(
    responses(
        (status = 200, description = "`用户创建成功` or `用户信息更新成功`", body = Envelope<SyncData>),
        EnvelopeBodyErrors,
    ),
    security(("platform_key" = [])),
)]
#[post("/sync")]
async fn sync(
    service: Service,
    Platform(p): Platform,
    body: web::Json<SyncRequest>,
) -> Result<HttpResponse, ApiError> {
    let outcome = service.sync(&p, body.into_inner().into(), now()).await?;
    let message = if outcome.created {
        "用户创建成功"
    } else {
        "用户信息更新成功"
    };
    Ok(ok(message, SyncData::from(outcome)))
}

/// Credits the user in USD, once per `payment_id` (a repeat with the same user and amount
/// answers the first credit with `idempotent_replay: true`).
#[utoipa::path(
    responses(
        (status = 200, description = "`充值成功`", body = Envelope<TopUpData>),
        (status = 404, description = "`user_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`payment_id_conflict`: the `payment_id` was used with another user or amount; nothing changed", body = ErrorEnvelope),
        EnvelopeBodyErrors,
    ),
    security(("platform_key" = [])),
)]
#[post("/topup")]
async fn top_up(
    service: Service,
    Platform(p): Platform,
    body: web::Json<TopUpRequest>,
) -> Result<HttpResponse, ApiError> {
    let result = service.top_up(&p, body.into_inner().into(), now()).await?;
    Ok(ok("充值成功", TopUpData::from(result)))
}

/// Issues an API key for the relay; the full key is in this answer only.
#[utoipa::path(
    responses(
        (status = 200, description = "`Token创建成功`", body = Envelope<IssuedTokenData>),
        (status = 404, description = "`user_not_found`", body = ErrorEnvelope),
        EnvelopeBodyErrors,
    ),
    security(("platform_key" = [])),
)]
#[post("/token")]
async fn create_token(
    service: Service,
    Platform(p): Platform,
    body: web::Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let issued = service
        .create_token(&p, body.into_inner().into(), now())
        .await?;
    Ok(ok("Token创建成功", IssuedTokenData::from(issued)))
}

/// Deletes a key; every instance refuses it within a second.
#[utoipa::path(
    responses(
        (status = 200, description = "`Token删除成功`", body = Envelope<DeletedTokenData>),
        (status = 404, description = "`token_not_found`: no such key of this user", body = ErrorEnvelope),
        EnvelopeBodyErrors,
    ),
    security(("platform_key" = [])),
)]
#[delete("/token")]
async fn delete_token(
    service: Service,
    Platform(p): Platform,
    body: web::Json<DeleteTokenRequest>,
) -> Result<HttpResponse, ApiError> {
    // The service publishes the deletion: every instance's key cache drops the key.
    let (user, token) = service.delete_token(&p, body.into_inner().into()).await?;
    Ok(ok(
        "Token删除成功",
        DeletedTokenData {
            token_id: token.get(),
            external_user_id: user.as_str().to_owned(),
        },
    ))
}

/// The user's balance, what it buys per served model, keys (masked), the last 10 calls and usage
/// per model.
#[utoipa::path(
    responses(
        (status = 200, body = Envelope<StatsData>),
        (status = 404, description = "`user_not_found`", body = ErrorEnvelope),
        EnvelopeErrors,
    ),
    security(("platform_key" = [])),
)]
#[get("/{external_user_id}/stats")]
async fn stats(
    service: Service,
    gateway: web::Data<Gateway>,
    Platform(p): Platform,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let at = now();
    let stats = service.stats(&p, &id).await?;
    let catalog = gateway.catalog();
    Ok(ok("", StatsData::new(stats, at, catalog.served())))
}

/// The user's log (calls and top-ups), newest first, with a summary of the whole filtered range.
#[utoipa::path(
    params(LogsQuery),
    responses(
        (status = 200, body = Envelope<LogsData>),
        (status = 404, description = "`user_not_found`", body = ErrorEnvelope),
        EnvelopeErrors,
    ),
    security(("platform_key" = [])),
)]
#[get("/{external_user_id}/logs")]
async fn logs(
    service: Service,
    Platform(p): Platform,
    id: web::Path<String>,
    query: web::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    let logs = service.logs(&p, &id, query.into_inner().into()).await?;
    Ok(ok("", LogsData::from(logs)))
}

/// The models that have an enabled channel, with their prices (USD per 1M tokens).
#[utoipa::path(
    responses(
        (status = 200, body = Envelope<Vec<ModelPriceView>>),
        EnvelopeErrors,
    ),
    security(("platform_key" = [])),
)]
#[get("/models")]
async fn models(_: Platform, gateway: web::Data<Gateway>) -> HttpResponse {
    let catalog = gateway.catalog();
    let served: Vec<ModelPriceView> = catalog
        .served()
        .iter()
        .map(|(m, p)| ModelPriceView::new(m, p))
        .collect();
    ok("", served)
}
