//! The admin read API (SPEC §7), under `/api/admin`: users across platforms, one user with
//! keys and usage, the log across users, hourly usage. Read-only, for the console and for
//! scripts; the same admin key and envelope as the rest of the admin API.

use crate::auth::Admin;
use crate::clock::now;
use crate::dto::Envelope;
use crate::dto_admin::{
    AdminLogsData, AdminLogsQuery, UsageData, UsageQuery, UserDetailData, UsersData, UsersQuery,
};
use crate::error::{ApiError, ErrorEnvelope};
use crate::openapi::EnvelopeErrors;
use actix_web::{HttpResponse, get, web};
use tollgate_domain::admin_read::AdminReadService;
use tollgate_storage::SeaStore;

/// The service over the application's store (the store is shared; the service is one `Arc`).
fn service(store: web::Data<SeaStore>) -> AdminReadService {
    AdminReadService::new(store.into_inner())
}

fn ok<T: serde::Serialize>(data: T) -> HttpResponse {
    HttpResponse::Ok().json(Envelope::ok("", data))
}

super::routes!(users, user, logs, usage);

/// Users across platforms, newest first, searched by external id or username.
#[utoipa::path(
    params(UsersQuery),
    responses((status = 200, body = Envelope<UsersData>), EnvelopeErrors),
    security(("admin_key" = [])),
)]
#[get("/users")]
async fn users(
    _: Admin,
    store: web::Data<SeaStore>,
    query: web::Query<UsersQuery>,
) -> Result<HttpResponse, ApiError> {
    let list = service(store).users(query.into_inner().into()).await?;
    Ok(ok(UsersData::from(list)))
}

/// One user by Tollgate's id: balance, keys (masked) and usage per model.
#[utoipa::path(
    responses(
        (status = 200, body = Envelope<UserDetailData>),
        (status = 404, description = "`user_not_found`", body = ErrorEnvelope),
        EnvelopeErrors,
    ),
    security(("admin_key" = [])),
)]
#[get("/users/{user_id}")]
async fn user(
    _: Admin,
    store: web::Data<SeaStore>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let at = now();
    let detail = service(store).user(&id).await?;
    Ok(ok(UserDetailData::new(detail, at)))
}

/// The log across users with the filters of the external log plus user and channel; pages
/// reach the newest 10,000 rows of a filter.
#[utoipa::path(
    params(AdminLogsQuery),
    responses((status = 200, body = Envelope<AdminLogsData>), EnvelopeErrors),
    security(("admin_key" = [])),
)]
#[get("/logs")]
async fn logs(
    _: Admin,
    store: web::Data<SeaStore>,
    query: web::Query<AdminLogsQuery>,
) -> Result<HttpResponse, ApiError> {
    let logs = service(store).logs(query.into_inner().into()).await?;
    Ok(ok(AdminLogsData::from(logs)))
}

/// Hourly calls, tokens, quota and spend over the last `hours`, per channel, and the holds in
/// flight.
#[utoipa::path(
    params(UsageQuery),
    responses((status = 200, body = Envelope<UsageData>), EnvelopeErrors),
    security(("admin_key" = [])),
)]
#[get("/usage")]
async fn usage(
    _: Admin,
    store: web::Data<SeaStore>,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let report = service(store)
        .usage(query.into_inner().into(), now())
        .await?;
    Ok(ok(UsageData::from(report)))
}
