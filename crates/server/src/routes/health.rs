//! `/healthz` (the process answers) and `/readyz` (the database answers too, within a second:
//! a load balancer must learn of an outage quickly, not after a connection timeout; Redis is
//! shown as a field).

use actix_web::{HttpResponse, web};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tollgate_domain::cluster::Instance;
use tollgate_relay::feed::Feed;
use tollgate_storage::SeaStore;

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

/// `GET /healthz`.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: ready while the database answers. Redis is reported as a field (`up`,
/// `down`, or `off` when not configured) and never makes the instance unready: without it,
/// changes reach this instance by polling the database.
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
    let body = |status: &str| {
        json!({"status": status, "database": store.backend_name(), "redis": redis,
               "instance": cluster.instance.name})
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
