//! The admin API (SPEC §5), under `/api/admin`: channels and prices. Every change goes through
//! the admin service, which publishes it on the change feed: this instance's catalog is
//! refreshed before the answer, every other instance's within a second.

use crate::auth::Admin;
use crate::clock::now;
use crate::dto::{
    ChannelRequest, ChannelTestView, ChannelView, Envelope, ModelPriceView, PriceRequest, PriceView,
};
use crate::error::ApiError;
use actix_web::{HttpResponse, web};
use std::collections::BTreeMap;
use tollgate_domain::admin::AdminService;
use tollgate_domain::ids::ChannelId;
use tollgate_relay::Gateway;

type Service = web::Data<AdminService>;
type Relay = web::Data<Gateway>;

fn ok<T: serde::Serialize>(message: &'static str, data: T) -> HttpResponse {
    HttpResponse::Ok().json(Envelope::ok(message, data))
}

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/channels", web::get().to(list_channels))
        .route("/channels", web::post().to(create_channel))
        .route("/channels/{id}", web::get().to(get_channel))
        .route("/channels/{id}", web::put().to(update_channel))
        .route("/channels/{id}", web::delete().to(delete_channel))
        .route("/channels/{id}/enable", web::post().to(enable_channel))
        .route("/channels/{id}/disable", web::post().to(disable_channel))
        .route("/channels/{id}/test", web::post().to(test_channel))
        .route("/pricing", web::get().to(prices))
        .route("/pricing/{model}", web::put().to(put_price));
}

/// A channel id from the path; anything that is not one names no channel.
fn channel_id(raw: &str) -> Result<ChannelId, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(ChannelId::new)
        .ok_or_else(|| tollgate_domain::DomainError::ChannelNotFound.into())
}

async fn list_channels(_: Admin, service: Service) -> Result<HttpResponse, ApiError> {
    let channels: Vec<ChannelView> = service
        .channels()
        .await?
        .into_iter()
        .map(ChannelView::from)
        .collect();
    Ok(ok("", channels))
}

async fn get_channel(
    _: Admin,
    service: Service,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let channel = service.channel(channel_id(&id)?).await?;
    Ok(ok("", ChannelView::from(channel)))
}

async fn create_channel(
    _: Admin,
    service: Service,
    body: web::Json<ChannelRequest>,
) -> Result<HttpResponse, ApiError> {
    let channel = service
        .create_channel(body.into_inner().into(), now())
        .await?;
    Ok(ok("渠道创建成功", ChannelView::from(channel)))
}

async fn update_channel(
    _: Admin,
    service: Service,
    id: web::Path<String>,
    body: web::Json<ChannelRequest>,
) -> Result<HttpResponse, ApiError> {
    let channel = service
        .update_channel(channel_id(&id)?, body.into_inner().into(), now())
        .await?;
    Ok(ok("渠道更新成功", ChannelView::from(channel)))
}

async fn delete_channel(
    _: Admin,
    service: Service,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = channel_id(&id)?;
    service.delete_channel(id).await?;
    Ok(ok("渠道删除成功", serde_json::json!({ "id": id.get() })))
}

async fn enable_channel(
    admin: Admin,
    service: Service,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    switch(admin, service, id, true).await
}

async fn disable_channel(
    admin: Admin,
    service: Service,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    switch(admin, service, id, false).await
}

async fn switch(
    _: Admin,
    service: Service,
    id: web::Path<String>,
    on: bool,
) -> Result<HttpResponse, ApiError> {
    let channel = service.set_enabled(channel_id(&id)?, on, now()).await?;
    let message = if on {
        "渠道已启用"
    } else {
        "渠道已禁用"
    };
    Ok(ok(message, ChannelView::from(channel)))
}

async fn test_channel(
    _: Admin,
    service: Service,
    gateway: Relay,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let channel = service.channel(channel_id(&id)?).await?;
    let result = gateway.test_channel(&channel).await;
    Ok(ok("", ChannelTestView::from(result)))
}

async fn prices(_: Admin, service: Service) -> Result<HttpResponse, ApiError> {
    let prices: BTreeMap<String, PriceView> = service
        .prices()
        .await?
        .iter()
        .map(|(m, p)| (m.clone(), PriceView::from(p)))
        .collect();
    Ok(ok("", prices))
}

async fn put_price(
    _: Admin,
    service: Service,
    model: web::Path<String>,
    body: web::Json<PriceRequest>,
) -> Result<HttpResponse, ApiError> {
    let (name, price) = service
        .put_price(&model, body.into_inner().into(), now())
        .await?;
    Ok(ok("价格已更新", ModelPriceView::new(name.as_str(), &price)))
}
