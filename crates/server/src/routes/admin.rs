//! The admin API (SPEC §5), under `/api/admin`: channels and prices. Every change goes through
//! the admin service, which publishes it on the change feed: this instance's catalog is
//! refreshed before the answer, every other instance's within a second.

use crate::auth::Admin;
use crate::clock::now;
use crate::dto::{
    ChannelRequest, ChannelTestView, ChannelView, DeletedChannelData, Envelope, ModelPriceView,
    PriceRequest, PriceView,
};
use crate::error::{ApiError, ErrorEnvelope};
use crate::openapi::{EnvelopeBodyErrors, EnvelopeErrors};
use actix_web::{HttpResponse, delete, get, post, put, web};
use std::collections::BTreeMap;
use tollgate_domain::admin::AdminService;
use tollgate_domain::ids::ChannelId;
use tollgate_relay::Gateway;

type Service = web::Data<AdminService>;
type Relay = web::Data<Gateway>;

fn ok<T: serde::Serialize>(message: &'static str, data: T) -> HttpResponse {
    HttpResponse::Ok().json(Envelope::ok(message, data))
}

super::routes!(
    list_channels,
    create_channel,
    get_channel,
    update_channel,
    delete_channel,
    enable_channel,
    disable_channel,
    test_channel,
    prices,
    put_price
);

/// A channel id from the path; anything that is not one names no channel.
fn channel_id(raw: &str) -> Result<ChannelId, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(ChannelId::new)
        .ok_or_else(|| tollgate_domain::DomainError::ChannelNotFound.into())
}

/// Every channel (keys never shown).
#[utoipa::path(
    responses((status = 200, body = Envelope<Vec<ChannelView>>), EnvelopeErrors),
    security(("admin_key" = [])),
)]
#[get("/channels")]
async fn list_channels(_: Admin, service: Service) -> Result<HttpResponse, ApiError> {
    let channels: Vec<ChannelView> = service
        .channels()
        .await?
        .into_iter()
        .map(ChannelView::from)
        .collect();
    Ok(ok("", channels))
}

/// One channel.
#[utoipa::path(
    responses(
        (status = 200, body = Envelope<ChannelView>),
        (status = 404, description = "`channel_not_found`", body = ErrorEnvelope),
        EnvelopeErrors,
    ),
    security(("admin_key" = [])),
)]
#[get("/channels/{id}")]
async fn get_channel(
    _: Admin,
    service: Service,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let channel = service.channel(channel_id(&id)?).await?;
    Ok(ok("", ChannelView::from(channel)))
}

/// Creates a channel; it serves from the next request here and within a second everywhere.
#[utoipa::path(
    responses(
        (status = 200, description = "`渠道创建成功`", body = Envelope<ChannelView>),
        EnvelopeBodyErrors,
    ),
    security(("admin_key" = [])),
)]
#[post("/channels")]
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

/// Changes a channel: fields absent from the body keep their value.
#[utoipa::path(
    responses(
        (status = 200, description = "`渠道更新成功`", body = Envelope<ChannelView>),
        (status = 404, description = "`channel_not_found`", body = ErrorEnvelope),
        EnvelopeBodyErrors,
    ),
    security(("admin_key" = [])),
)]
#[put("/channels/{id}")]
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

/// Deletes a channel.
#[utoipa::path(
    responses(
        (status = 200, description = "`渠道删除成功`", body = Envelope<DeletedChannelData>),
        (status = 404, description = "`channel_not_found`", body = ErrorEnvelope),
        EnvelopeErrors,
    ),
    security(("admin_key" = [])),
)]
#[delete("/channels/{id}")]
async fn delete_channel(
    _: Admin,
    service: Service,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = channel_id(&id)?;
    service.delete_channel(id).await?;
    Ok(ok("渠道删除成功", DeletedChannelData { id: id.get() }))
}

/// Enables a channel (no body needed).
#[utoipa::path(
    responses(
        (status = 200, description = "`渠道已启用`", body = Envelope<ChannelView>),
        (status = 404, description = "`channel_not_found`", body = ErrorEnvelope),
        EnvelopeErrors,
    ),
    security(("admin_key" = [])),
)]
#[post("/channels/{id}/enable")]
async fn enable_channel(
    admin: Admin,
    service: Service,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    switch(admin, service, id, true).await
}

/// Disables a channel (no body needed); Tollgate never re-enables what an admin disabled.
#[utoipa::path(
    responses(
        (status = 200, description = "`渠道已禁用`", body = Envelope<ChannelView>),
        (status = 404, description = "`channel_not_found`", body = ErrorEnvelope),
        EnvelopeErrors,
    ),
    security(("admin_key" = [])),
)]
#[post("/channels/{id}/disable")]
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

/// Sends one small call through the channel and reports how it went (the answer is 200 either
/// way; `ok` tells).
#[utoipa::path(
    responses(
        (status = 200, body = Envelope<ChannelTestView>),
        (status = 404, description = "`channel_not_found`", body = ErrorEnvelope),
        EnvelopeErrors,
    ),
    security(("admin_key" = [])),
)]
#[post("/channels/{id}/test")]
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

/// Every price: model → USD per 1M tokens.
#[utoipa::path(
    responses((status = 200, body = Envelope<BTreeMap<String, PriceView>>), EnvelopeErrors),
    security(("admin_key" = [])),
)]
#[get("/pricing")]
async fn prices(_: Admin, service: Service) -> Result<HttpResponse, ApiError> {
    let prices: BTreeMap<String, PriceView> = service
        .prices()
        .await?
        .iter()
        .map(|(m, p)| (m.clone(), PriceView::from(p)))
        .collect();
    Ok(ok("", prices))
}

/// Sets a model's price (USD per 1M tokens); applies from the next request.
#[utoipa::path(
    responses(
        (status = 200, description = "`价格已更新`", body = Envelope<ModelPriceView>),
        EnvelopeBodyErrors,
    ),
    security(("admin_key" = [])),
)]
#[put("/pricing/{model}")]
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
