//! `/healthz` (the process answers) and `/readyz` (the database answers too, within a second:
//! a load balancer must learn of an outage quickly, not after a connection timeout; Redis is
//! shown as a field).

use actix_web::{HttpResponse, web};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tollgate_domain::cluster::Instance;
use tollgate_relay::feed::Feed;
use tollgate_storage::SeaStore;
use utoipa::ToSchema;

/// This instance among those sharing the database, for `/readyz` (built at start-up).
#[derive(Debug)]
pub struct Cluster {
    /// The change feed (and its Redis, when configured).
    pub feed: Arc<Feed>,
    /// This instance.
    pub instance: Instance,
}

/// Longest wait for the database's answer in `/readyz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// `GET /healthz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    status: &'static str,
}

/// `GET /readyz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness<'a> {
    /// `ready` (200) or `unavailable` (503).
    status: &'a str,
    /// `sqlite` or `mysql`.
    database: &'a str,
    /// `up`, `down`, or `off` when not configured; never makes the instance unready.
    redis: &'a str,
    /// This instance's name.
    instance: &'a str,
}

/// `GET /healthz`: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    responses((status = 200, body = Health)),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// `GET /readyz`: ready while the database answers. Redis is reported as a field (`up`,
/// `down`, or `off` when not configured) and never makes the instance unready: without it,
/// changes reach this instance by polling the database.
#[utoipa::path(
    get,
    path = "/readyz",
    responses(
        (status = 200, description = "The database answered within 1 s", body = Readiness),
        (status = 503, description = "The database did not answer within 1 s", body = Readiness),
    ),
)]
pub async fn readyz(store: web::Data<SeaStore>, cluster: web::Data<Cluster>) -> HttpResponse {
    let (database, redis) = tokio::join!(
        tokio::time::timeout(READY_TIMEOUT, store.ping()),
        tokio::time::timeout(READY_TIMEOUT, cluster.feed.redis_up()),
    );
    let redis = match redis {
        Ok(None) => "off",
        Ok(Some(true)) => "up",
        Ok(Some(false)) | Err(_) => "down",
    };
    let body = |status| Readiness {
        status,
        database: store.backend_name(),
        redis,
        instance: &cluster.instance.name,
    };
    match database {
        Ok(Ok(())) => HttpResponse::Ok().json(body("ready")),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(body("unavailable"))
        }
        Err(_) => {
            tracing::warn!("readiness check failed: the database did not answer within 1 s");
            HttpResponse::ServiceUnavailable().json(body("unavailable"))
        }
    }
}
