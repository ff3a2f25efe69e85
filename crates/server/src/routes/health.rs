//! `/healthz` (the process answers) and `/readyz` (the database answers too).

use actix_web::{HttpResponse, web};
use serde_json::json;
use tollgate_storage::SeaStore;

/// `GET /healthz`.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`.
pub async fn readyz(store: web::Data<SeaStore>) -> HttpResponse {
    match store.ping().await {
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
