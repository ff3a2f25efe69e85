//! The external user API (SPEC §3), under `/api/user/external`.

use crate::auth::Platform;
use crate::clock::now;
use crate::dto::{
    DeleteTokenRequest, DeletedTokenData, Envelope, IssuedTokenData, LogsData, LogsQuery,
    ModelPriceView, StatsData, SyncData, SyncRequest, TokenRequest, TopUpData, TopUpRequest,
};
use crate::error::ApiError;
use actix_web::{HttpResponse, web};
use tollgate_domain::service::ExternalUserService;
use tollgate_relay::Gateway;

type Service = web::Data<ExternalUserService>;

fn ok<T: serde::Serialize>(message: &'static str, data: T) -> HttpResponse {
    HttpResponse::Ok().json(Envelope::ok(message, data))
}

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/sync", web::post().to(sync))
        .route("/topup", web::post().to(top_up))
        .route("/token", web::post().to(create_token))
        .route("/token", web::delete().to(delete_token))
        .route("/models", web::get().to(models))
        .route("/{external_user_id}/stats", web::get().to(stats))
        .route("/{external_user_id}/logs", web::get().to(logs));
}

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

async fn top_up(
    service: Service,
    Platform(p): Platform,
    body: web::Json<TopUpRequest>,
) -> Result<HttpResponse, ApiError> {
    let result = service.top_up(&p, body.into_inner().into(), now()).await?;
    Ok(ok("充值成功", TopUpData::from(result)))
}

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
async fn models(Platform(_): Platform, gateway: web::Data<Gateway>) -> HttpResponse {
    let catalog = gateway.catalog();
    let served: Vec<ModelPriceView> = catalog
        .served()
        .iter()
        .map(|(m, p)| ModelPriceView::new(m, p))
        .collect();
    ok("", served)
}
