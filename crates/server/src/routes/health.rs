//! `/healthz` (the process answers) and `/readyz` (the database answers too, within a second:
//! a load balancer must learn of an outage quickly, not after a connection timeout).

use actix_web::{HttpResponse, web};
use serde_json::json;
use std::time::Duration;
use tollgate_storage::SeaStore;

/// Longest wait for the database's answer in `/readyz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// `GET /healthz`.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`.
pub async fn readyz(store: web::Data<SeaStore>) -> HttpResponse {
    let answered = tokio::time::timeout(READY_TIMEOUT, store.ping()).await;
    match answered.unwrap_or_else(|_| {
        Err(tollgate_storage::StorageError::Connect(
            "no answer within 1 s".into(),
        ))
    }) {
        Ok(()) => {
            HttpResponse::Ok().json(json!({"status": "ready", "database": store.backend_name()}))
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable()
                .json(json!({"status": "unavailable", "database": store.backend_name()}))
        }
    }
}
