//! The admin read API (SPEC §7), under `/api/admin`: users across platforms, one user with
//! keys and usage, the log across users, hourly usage. Read-only, for the console and for
//! scripts; the same admin key and envelope as the rest of the admin API.

use crate::auth::Admin;
use crate::clock::now;
use crate::dto::Envelope;
use crate::dto_admin::{
    AdminLogsData, AdminLogsQuery, UsageData, UsageQuery, UserDetailData, UsersData, UsersQuery,
};
use crate::error::ApiError;
use actix_web::{HttpResponse, web};
use tollgate_domain::admin_read::AdminReadService;
use tollgate_storage::SeaStore;

/// The service over the application's store (the store is shared; the service is one `Arc`).
fn service(store: web::Data<SeaStore>) -> AdminReadService {
    AdminReadService::new(store.into_inner())
}

fn ok<T: serde::Serialize>(data: T) -> HttpResponse {
    HttpResponse::Ok().json(Envelope::ok("", data))
}

/// Registers the routes (inside the `/api/admin` scope).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/users", web::get().to(users))
        .route("/users/{user_id}", web::get().to(user))
        .route("/logs", web::get().to(logs))
        .route("/usage", web::get().to(usage));
}

async fn users(
    _: Admin,
    store: web::Data<SeaStore>,
    query: web::Query<UsersQuery>,
) -> Result<HttpResponse, ApiError> {
    let list = service(store).users(query.into_inner().into()).await?;
    Ok(ok(UsersData::from(list)))
}

async fn user(
    _: Admin,
    store: web::Data<SeaStore>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let at = now();
    let detail = service(store).user(&id).await?;
    Ok(ok(UserDetailData::new(detail, at)))
}

async fn logs(
    _: Admin,
    store: web::Data<SeaStore>,
    query: web::Query<AdminLogsQuery>,
) -> Result<HttpResponse, ApiError> {
    let logs = service(store).logs(query.into_inner().into()).await?;
    Ok(ok(AdminLogsData::from(logs)))
}

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
