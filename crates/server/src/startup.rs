//! Building and running the application: storage and migrations, the service graph, the HTTP
//! server with its request-id middleware ([`crate::request_id`]). Tests build it on port 0
//! against a fresh database.

use crate::auth::{AdminKey, Platforms};
use crate::clock::now;
use crate::config::{self, ADMIN_BODY_LIMIT, EXTERNAL_BODY_LIMIT, LedgerKind, Settings};
use crate::error::{ApiError, OpenAiError};
use crate::metrics;
use crate::request_id::request_context;
use crate::routes::health::Cluster;
use crate::routes::{self, admin, admin_read, console, external, health, relay};
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use secrecy::ExposeSecret;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use tollgate_domain::RepoError;
use tollgate_domain::admin::AdminService;
use tollgate_domain::channel::ChannelKind;
use tollgate_domain::cluster::{Doorbell, Instance, InstanceId};
use tollgate_domain::ratelimit::RateLimiter;
use tollgate_domain::service::{Entropy, ExternalUserService};
use tollgate_relay::client::{Timeouts, UpstreamClient};
use tollgate_relay::feed::{Caches, Feed};
use tollgate_relay::limits::Limiter;
use tollgate_relay::membership::Membership;
use tollgate_relay::{
    ExactLedger, ExactLedgerConfig, FailureLog, FailureLogConfig, Gateway, GatewayConfig,
    LeaseLedger, LeaseLedgerConfig, Ledger,
};
use tollgate_storage::{KeyCipher, RedisBus, RedisLimiter, SeaStore, StorageError};

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
    /// Stored channel keys that cannot be read with the configured `TOLLGATE_SECRET_KEY`.
    #[error("{0}")]
    ChannelKeys(StorageError),
    /// Loading channels and prices, or creating the start-up channels.
    #[error("start-up channels: {0}")]
    Catalog(String),
}

impl From<RepoError> for StartupError {
    fn from(e: RepoError) -> Self {
        StartupError::Catalog(e.detail().to_owned())
    }
}

/// Platform secrets shorter than this are warned about at start-up.
pub const WEAK_PLATFORM_SECRET_CHARS: usize = 16;

/// A built, not yet running, application.
pub struct Application {
    port: u16,
    server: Server,
    ledger: Arc<dyn Ledger>,
    failures: FailureLog,
    membership: Arc<Membership>,
    grace: Duration,
}

impl Application {
    /// Connects and migrates the database, binds the listener and prepares the server.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        metrics::recorder();
        let store = SeaStore::connect_with(
            &settings.database_url,
            Duration::from_secs(settings.database_timeout_secs),
        )
        .await?
        .with_cipher(settings.secret_key.as_ref().map(KeyCipher::new));
        store.migrate().await?;
        tracing::info!(database = store.backend_name(), "database ready");
        let keys = store
            .secure_channel_keys()
            .await
            .map_err(StartupError::ChannelKeys)?;
        if settings.secret_key.is_none() {
            tracing::warn!(
                plain = keys.plain,
                "TOLLGATE_SECRET_KEY is unset: channel keys are stored in plain text; set it (32 random bytes, base64) to encrypt them at rest"
            );
        } else if keys.encrypted_now > 0 {
            tracing::info!(
                encrypted = keys.encrypted_now,
                "channel keys stored in plain text were encrypted with TOLLGATE_SECRET_KEY"
            );
        }
        let weak = settings
            .external_api_keys
            .iter()
            .filter(|k| k.expose_secret().chars().count() < WEAK_PLATFORM_SECRET_CHARS)
            .count();
        if weak > 0 {
            tracing::warn!(
                weak,
                "TOLLGATE_EXTERNAL_API_KEYS: {weak} platform secret(s) shorter than {WEAK_PLATFORM_SECRET_CHARS} characters; a database dump lets an attacker guess short secrets offline — use 32 random characters"
            );
        }
        if settings.external_api_keys.is_empty() {
            tracing::warn!(
                "TOLLGATE_EXTERNAL_API_KEYS is unset: the external user API answers 401 to everyone"
            );
        }

        let listener = TcpListener::bind(settings.listen)?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(store.clone());

        // One instance among those sharing the database: registered (releasing what a previous
        // start under the same name left held) before it takes any call.
        let mut id = [0u8; 12];
        OsEntropy.fill(&mut id);
        let name = settings
            .instance_name
            .clone()
            .unwrap_or_else(|| format!("{}:{port}", config::host_name()));
        let membership = Arc::new(Membership::new(
            Instance::new(InstanceId::from_random(id), &name),
            shared.clone(),
            Duration::from_secs(settings.instance_timeout_secs),
        ));
        membership.join().await?;

        // The caches and the one feed through which every write that they depend on reaches
        // them, here and on every other instance.
        let bell: Option<Arc<dyn Doorbell>> = match &settings.redis_url {
            Some(url) => Some(Arc::new(RedisBus::new(url)?)),
            None => None,
        };
        // Rate limits shared by every instance through Redis; per instance without it.
        let shared_limits: Option<Arc<dyn RateLimiter>> = match &settings.redis_url {
            Some(url) => Some(Arc::new(RedisLimiter::new(url)?)),
            None => None,
        };
        let limiter = Limiter::new(shared_limits);
        let caches = Arc::new(Caches::load(shared.clone()).await?);
        let feed = Feed::new(
            membership.me().id.clone(),
            shared.clone(),
            bell,
            caches.clone(),
        )
        .await?;
        let service = web::Data::new(
            ExternalUserService::new(shared.clone(), Arc::new(OsEntropy), feed.clone())
                .with_default_limits(settings.default_limits),
        );
        let admin_service = AdminService::new(shared.clone(), feed.clone());
        provider_channels(&admin_service, settings).await?;
        let r = &settings.relay;
        let client = UpstreamClient::new(Timeouts {
            connect: Duration::from_secs(r.connect_timeout_secs),
            first_byte: Duration::from_secs(r.first_byte_timeout_secs),
            idle: Duration::from_secs(r.idle_timeout_secs),
        });
        // Billing's one home: the ledger owns holds, settlements, the expiry sweep and the
        // shutdown drain.
        let exact = ExactLedger::start(
            shared.clone(),
            ExactLedgerConfig {
                backlog_capacity: usize::try_from(r.settlement_backlog).unwrap_or(usize::MAX),
                settlement_window: Duration::from_millis(r.settlement_window_ms),
                ..ExactLedgerConfig::default()
            },
        );
        let ledger: Arc<dyn Ledger> = match r.ledger {
            LedgerKind::Exact => exact,
            LedgerKind::Lease => LeaseLedger::start(
                exact,
                shared.clone(),
                membership.me().id.clone(),
                LeaseLedgerConfig::default(),
            ),
        };
        // Failed calls are counted in the background, off every call's path.
        let failures = FailureLog::start(shared.clone(), FailureLogConfig::default());
        let gateway = web::Data::new(Gateway::new(
            shared,
            caches,
            feed.clone(),
            membership.me().id.clone(),
            ledger.clone(),
            failures.clone(),
            limiter,
            client,
            GatewayConfig {
                retries: r.retries,
                default_max_tokens: r.default_max_tokens,
                hold_ttl: Duration::from_secs(r.hold_ttl_secs),
                failure_threshold: r.failure_threshold,
                ..GatewayConfig::default()
            },
        ));
        channel_probe(&gateway, Duration::from_secs(r.probe_secs));
        feed.listen();
        membership.run();
        let cluster = web::Data::new(Cluster {
            feed: feed.clone(),
            instance: membership.me().clone(),
        });
        let admin_service = web::Data::new(admin_service);
        let platforms = web::Data::new(Platforms::new(&settings.external_api_keys));
        let admin_key = web::Data::new(AdminKey::new(settings.admin_key.as_ref()));
        if settings.admin_key.is_none() {
            tracing::warn!("TOLLGATE_ADMIN_KEY is unset: the admin API answers 401 to everyone");
        }
        let body_limit = web::Data::new(relay::BodyLimit {
            bytes: r.body_limit,
            deadline: Duration::from_secs(r.body_timeout_secs),
        });
        let store = web::Data::new(store);
        let app_gateway = gateway.clone();

        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(request_context))
                .app_data(service.clone())
                .app_data(platforms.clone())
                .app_data(store.clone())
                .app_data(cluster.clone())
                .app_data(app_gateway.clone())
                .app_data(admin_service.clone())
                .app_data(admin_key.clone())
                .app_data(body_limit.clone())
                .app_data(routes::json_config(EXTERNAL_BODY_LIMIT))
                .app_data(routes::query_config())
                .route("/healthz", web::get().to(health::healthz))
                .route("/readyz", web::get().to(health::readyz))
                .route("/metrics", web::get().to(metrics::scrape))
                .service(web::scope("/api/user/external").configure(external::configure))
                .service(
                    web::scope("/api/admin")
                        .app_data(routes::json_config(ADMIN_BODY_LIMIT))
                        .configure(admin::configure)
                        .configure(admin_read::configure),
                )
                .configure(console::configure)
                .configure(crate::openapi::configure)
                .service(
                    web::scope("/v1")
                        .configure(relay::configure)
                        .default_service(web::to(|| async {
                            Err::<actix_web::HttpResponse, _>(OpenAiError::route_not_found())
                        })),
                )
                .default_service(web::to(|| async {
                    Err::<actix_web::HttpResponse, _>(ApiError::route_not_found())
                }))
        })
        // A client that closes its connection cancels its call (the handler future is dropped,
        // which cancels the upstream request and releases the hold) instead of leaving it to
        // run for nobody.
        .h1_allow_half_closed(false)
        // A stream is many small writes: with Nagle's algorithm each waited for the client's
        // (delayed, up to 40 ms) ACK of the one before, so events arrived in clumps and a
        // stream took ~30 ms longer than the provider's own.
        .tcp_nodelay(true)
        .listen(listener)?
        .shutdown_timeout(settings.shutdown_grace_secs)
        .run();
        tracing::info!(address = %settings.listen, port, instance = %membership.me().id, name = %membership.me().name, redis = feed.has_redis(), "listening");
        Ok(Application {
            port,
            server,
            ledger,
            failures,
            membership,
            grace: Duration::from_secs(settings.shutdown_grace_secs),
        })
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

    /// Serves until stopped (SIGINT/SIGTERM stop it gracefully: in-flight requests and
    /// streams finish, then their settlements are written before this returns).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        // Counts only: a short wait, and nothing is lost from the books if it runs out.
        if !self.failures.flush(Duration::from_secs(2)).await {
            tracing::warn!("failed calls of the last moments are not in the usage report");
        }
        if !self.ledger.drain(self.grace).await {
            let backlog = self.ledger.backlog();
            tracing::error!(
                pending = backlog.pending,
                failing = backlog.failing,
                "settlements still pending at exit (TOLLGATE_SHUTDOWN_GRACE_SECS passed); their holds will expire"
            );
        } else {
            // Everything settled: nothing of this instance's is left for the others to reap.
            self.membership.leave().await;
        }
        served
    }
}

/// Channels from `TOLLGATE_DASHSCOPE_API_KEY`, `TOLLGATE_DEEPSEEK_API_KEY`,
/// `TOLLGATE_OPENAI_API_KEY`, `TOLLGATE_ANTHROPIC_API_KEY` and `TOLLGATE_GEMINI_API_KEY`, each
/// created only when no channel of its type exists.
async fn provider_channels(admin: &AdminService, settings: &Settings) -> Result<(), StartupError> {
    let keys = &settings.provider_keys;
    let wanted = [
        (ChannelKind::DashScope, &keys.dashscope),
        (ChannelKind::DeepSeek, &keys.deepseek),
        (ChannelKind::OpenAi, &keys.openai),
        (ChannelKind::Anthropic, &keys.anthropic),
        (ChannelKind::Gemini, &keys.gemini),
    ];
    for (kind, key) in wanted {
        let Some(key) = key else { continue };
        let created = admin
            .ensure_provider_channel(kind, key.expose_secret(), now())
            .await
            .map_err(|e| StartupError::Catalog(format!("{kind}: {e}")))?;
        if created {
            tracing::info!(%kind, "created a channel from the environment");
        }
    }
    Ok(())
}

/// The probe that brings back automatically disabled channels.
fn channel_probe(gateway: &web::Data<Gateway>, probe_every: Duration) {
    let prober = gateway.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(probe_every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = prober.probe_disabled().await {
                tracing::warn!(error = %e, detail = e.detail(), "channel probe failed");
            }
        }
    });
}
