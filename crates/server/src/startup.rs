//! Building and running the application: storage and migrations, the service graph, the HTTP
//! server with its request-id middleware. Tests build it on port 0 against a fresh database.

use crate::auth::Platforms;
use crate::config::{EXTERNAL_BODY_LIMIT, Settings};
use crate::error::ApiError;
use crate::routes::{self, external, health};
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpServer, web};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;
use tollgate_domain::ids::hex;
use tollgate_domain::service::{Entropy, ExternalUserService};
use tollgate_storage::{SeaStore, StorageError};
use tracing::Instrument;

/// Random bytes from the operating system.
struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, buf: &mut [u8]) {
        // Without an OS random source no key can be made safely: stopping is the only answer.
        if let Err(e) = getrandom::fill(buf) {
            panic!("operating system random source failed: {e}");
        }
    }
}

/// Start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Database connection or migration.
    #[error("TOLLGATE_DATABASE_URL: {0}")]
    Storage(#[from] StorageError),
    /// Binding the listen address.
    #[error("TOLLGATE_LISTEN: {0}")]
    Listen(#[from] std::io::Error),
}

/// A built, not yet running, application.
pub struct Application {
    port: u16,
    server: Server,
}

/// The `X-Request-Id` header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn request_id() -> String {
    let mut bytes = [0u8; 12];
    OsEntropy.fill(&mut bytes);
    hex(&bytes)
}

/// Gives every request an id (in the `X-Request-Id` response header and its log span) and logs
/// one line per response.
async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request_id();
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.path());
    let started = Instant::now();
    async move {
        let mut res = next.call(req).await?;
        if let Ok(v) = HeaderValue::from_str(&id) {
            res.headers_mut().insert(REQUEST_ID, v);
        }
        tracing::info!(
            status = res.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "response"
        );
        Ok(res)
    }
    .instrument(span)
    .await
}

impl Application {
    /// Connects and migrates the database, binds the listener and prepares the server.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        let store = SeaStore::connect(&settings.database_url).await?;
        store.migrate().await?;
        tracing::info!(database = store.backend_name(), "database ready");
        if settings.external_api_keys.is_empty() {
            tracing::warn!(
                "TOLLGATE_EXTERNAL_API_KEYS is unset: the external user API answers 401 to everyone"
            );
        }

        let listener = TcpListener::bind(settings.listen)?;
        let port = listener.local_addr()?.port();
        let service = web::Data::new(ExternalUserService::new(
            Arc::new(store.clone()),
            Arc::new(OsEntropy),
        ));
        let platforms = web::Data::new(Platforms::new(&settings.external_api_keys));
        let store = web::Data::new(store);

        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(request_context))
                .app_data(service.clone())
                .app_data(platforms.clone())
                .app_data(store.clone())
                .app_data(routes::json_config(EXTERNAL_BODY_LIMIT))
                .app_data(routes::query_config())
                .route("/healthz", web::get().to(health::healthz))
                .route("/readyz", web::get().to(health::readyz))
                .service(web::scope("/api/user/external").configure(external::configure))
                .default_service(web::to(|| async {
                    Err::<actix_web::HttpResponse, _>(ApiError::route_not_found())
                }))
        })
        .listen(listener)?
        .shutdown_timeout(30)
        .run();
        tracing::info!(address = %settings.listen, port, "listening");
        Ok(Application { port, server })
    }

    /// The bound port (useful with port 0).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server.
    #[must_use]
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (SIGINT/SIGTERM stop it gracefully).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
