//! The gateway: one relayed call from key to settlement.
//!
//! 1. The key is found in the key cache (the database only on a miss).
//! 2. The body is parsed only as far as billing and routing need.
//! 3. The catalog snapshot gives the price and the channel order (no database read).
//! 4. The key's rate limits admit the call, then the [`Ledger`] reserves the estimated prompt
//!    plus the completion limit; if either refuses, nothing is sent upstream.
//! 5. [`crate::failover`] tries the channels in order.
//! 6. The answer is relayed (streams event by event) and the reservation settled once; a
//!    failure before the first byte drops it, which releases the hold.
//!
//! A call accepted (past the client's own checks) that then fails is reported once to the
//! [`FailureLog`], with the channel of its last attempt; see [`failure_of`].
//!
//! Everything of one call runs in the span current when [`Gateway::call`] is entered (the
//! request's span, which the server opens with empty `model` and `channel_id` fields),
//! including the stream body and the settlement, which run elsewhere.

use crate::RelayError;
use crate::cache::Catalog;
use crate::call::Call;
use crate::client::{ChunkError, UpstreamClient, read_all};
use crate::codec;
use crate::failover::{Failover, Unplaced};
use crate::failures::FailureLog;
use crate::feed::Caches;
use crate::health::ChannelHealth;
pub use crate::health::ChannelTest;
use crate::ledger::Ledger;
use crate::limits::{LimitTicket, Limiter};
use crate::metrics;
use crate::provider::{self, Provider};
use crate::settle::{Delivered, Ticket, now};
use crate::stream::{self, ClientStream, SettleGuard};
use crate::tokenizer;
use bytes::Bytes;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tollgate_domain::RepoError;
use tollgate_domain::billing::{DEFAULT_HOLD_COMPLETION_TOKENS, Hold, HoldRefusal, hold_amount};
use tollgate_domain::call_errors::{CallFailure, FailedCall};
use tollgate_domain::channel::{Api, Channel, Route, route};
use tollgate_domain::cluster::{ChangeFeed, InstanceId};
use tollgate_domain::ids::ChannelId;
use tollgate_domain::ratelimit::{Headroom, RateLimits, Subject};
use tollgate_domain::repository::RelayStore;
use tollgate_domain::time::UnixTime;
use tollgate_domain::token::{AccessKey, Token};

/// Relay settings.
#[derive(Debug, Clone, Copy)]
pub struct GatewayConfig {
    /// Extra attempts after the first (on another channel when one exists).
    pub retries: u32,
    /// Completion tokens assumed for the hold when the request sets no limit.
    pub default_max_tokens: u64,
    /// How long an unsettled hold lives before the sweeper releases it.
    pub hold_ttl: Duration,
    /// Consecutive failed client requests after which a channel is disabled automatically.
    pub failure_threshold: u32,
    /// Largest non-stream answer accepted from upstream.
    pub max_answer_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            retries: 2,
            default_max_tokens: DEFAULT_HOLD_COMPLETION_TOKENS,
            hold_ttl: Duration::from_secs(3600),
            failure_threshold: 5,
            max_answer_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What goes back to the client.
pub enum ChatReply {
    /// A complete JSON answer.
    Json {
        /// HTTP status from upstream (2xx).
        status: u16,
        /// The upstream's body as it came.
        body: Bytes,
        /// The key's limits and what is left of them, for the `x-ratelimit-*` headers.
        rate: Option<RateHeaders>,
    },
    /// An SSE stream.
    Stream {
        /// The events for the client.
        events: ClientStream,
        /// As for JSON answers.
        rate: Option<RateHeaders>,
    },
}

/// A key's limits and its headroom after admitting this call (the server writes them as
/// OpenAI's `x-ratelimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    /// The limits.
    pub limits: RateLimits,
    /// What is left.
    pub headroom: Headroom,
}

impl std::fmt::Debug for ChatReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatReply::Json { status, body, .. } => f
                .debug_struct("Json")
                .field("status", status)
                .field("bytes", &body.len())
                .finish(),
            ChatReply::Stream { .. } => f.write_str("Stream"),
        }
    }
}

/// A call's admission by the rate limits, until it is handed to the call's settlement: dropped
/// before that (the call failed or was refused before any answer), it frees the call's
/// concurrency slot and counts no tokens for it.
struct LimitGuard(Option<LimitTicket>);

impl LimitGuard {
    fn take(&mut self) -> Option<LimitTicket> {
        self.0.take()
    }
}

impl Drop for LimitGuard {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.release();
            tokio::spawn(async move { t.settle(0).await });
        }
    }
}

/// Whether `e` ends a call Tollgate had accepted (a failed call in the usage report), and how;
/// `None` for the client's own refusals (key, body, model, quota, the key's limits).
fn failure_of(e: &RelayError) -> Option<CallFailure> {
    match e {
        RelayError::InvalidKey
        | RelayError::TokenExpired
        | RelayError::TokenDisabled
        | RelayError::InvalidRequest(_)
        | RelayError::ModelNotFound(_)
        | RelayError::InsufficientQuota(_)
        | RelayError::RateLimited { .. } => None,
        RelayError::NoAvailableChannel(_) => Some(CallFailure::NoChannel),
        RelayError::Upstream(_) => Some(CallFailure::Upstream),
        RelayError::UpstreamTimeout => Some(CallFailure::Timeout),
        RelayError::UpstreamRejected { .. } => Some(CallFailure::Refused),
        RelayError::ChannelRateLimited { .. } => Some(CallFailure::RateLimited),
        RelayError::Unavailable(_) | RelayError::Repo(_) => Some(CallFailure::Unavailable),
    }
}

/// A call's id in rate-limit windows: the first 16 hex digits of its request id (random).
fn call_id(request_id: &str) -> u64 {
    request_id
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| random_below(u64::MAX))
}

/// A fast, non-cryptographic random source for load balancing (splitmix64 over a shared
/// counter seeded from the clock).
fn random_below(n: u64) -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    if n == 0 {
        return 0;
    }
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos().into());
    let mut z = STATE
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(seed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % n
}

/// Bodies up to this size are parsed and counted on the async worker; larger ones on the
/// blocking pool, so a few huge prompts cannot stall every other request.
const INLINE_PARSE_BYTES: usize = 16 * 1024;

/// How long a call waits at most for the settlement backlog to shrink
/// ([`Ledger::wait_for_room`]) before it goes on regardless.
const ROOM_WAIT: Duration = Duration::from_secs(2);

/// Parses the request and estimates its prompt tokens (the tokenizer's work is bounded per
/// request; see [`tokenizer::TOKENIZE_BUDGET_BYTES`]).
async fn parse_and_estimate(api: Api, raw: Bytes) -> Result<Call, RelayError> {
    let small = raw.len() <= INLINE_PARSE_BYTES;
    let work = move || Call::parse(api, &raw).map_err(RelayError::InvalidRequest);
    if small {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| RelayError::Unavailable("请求处理失败，请重试"))?
}

/// The relay.
pub struct Gateway {
    store: Arc<dyn RelayStore>,
    caches: Arc<Caches>,
    instance: InstanceId,
    client: UpstreamClient,
    ledger: Arc<dyn Ledger>,
    failures: FailureLog,
    config: GatewayConfig,
    health: ChannelHealth,
    limiter: Arc<Limiter>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .field("ledger", &self.ledger)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds the gateway over the shared caches, moving money through `ledger`, counting
    /// failed calls in `failures` and publishing its own changes (channels it disables or
    /// revives) on `feed`. Its holds carry `instance`.
    #[allow(clippy::too_many_arguments)] // each is a separate port that start-up wires in
    pub fn new(
        store: Arc<dyn RelayStore>,
        caches: Arc<Caches>,
        feed: Arc<dyn ChangeFeed>,
        instance: InstanceId,
        ledger: Arc<dyn Ledger>,
        failures: FailureLog,
        limiter: Arc<Limiter>,
        client: UpstreamClient,
        config: GatewayConfig,
    ) -> Self {
        tokenizer::warm_up();
        Gateway {
            health: ChannelHealth::new(store.clone(), feed, config.failure_threshold),
            store,
            caches,
            instance,
            client,
            ledger,
            failures,
            config,
            limiter,
        }
    }

    /// The catalog in force.
    #[must_use]
    pub fn catalog(&self) -> Arc<Catalog> {
        self.caches.catalog.snapshot()
    }

    /// The ledger calls' money moves through.
    #[must_use]
    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    /// The token of a presented key, if it is usable now.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Arc<Token>, RelayError> {
        let key = bearer
            .and_then(AccessKey::parse)
            .ok_or(RelayError::InvalidKey)?;
        let hash = key.hash();
        let token = match self.caches.keys.get(&hash) {
            Some(t) => t,
            None => {
                let t = self
                    .store
                    .find_token_by_hash(&hash)
                    .await?
                    .ok_or(RelayError::InvalidKey)?;
                self.caches.keys.put(&hash, t)
            }
        };
        if token.disabled {
            return Err(RelayError::TokenDisabled);
        }
        if now() >= token.expires_at {
            return Err(RelayError::TokenExpired);
        }
        Ok(token)
    }

    /// `GET /v1/models`: the served models.
    pub async fn models(&self, bearer: Option<&str>) -> Result<Vec<String>, RelayError> {
        self.authenticate(bearer).await?;
        Ok(self.catalog().served().keys().cloned().collect())
    }

    /// One relayed call of `api` (`POST /v1/chat/completions`, `/v1/messages`,
    /// `/v1/embeddings`, `/v1/completions`) for an authenticated key (see
    /// [`Gateway::authenticate`], which callers run before reading the body).
    pub async fn call(
        &self,
        api: Api,
        token: Arc<Token>,
        raw: Bytes,
        request_id: &str,
    ) -> Result<ChatReply, RelayError> {
        let mut channel = None;
        let result = self.place(api, token, raw, request_id, &mut channel).await;
        if let Err(e) = &result
            && let Some(kind) = failure_of(e)
        {
            self.failures.record(FailedCall {
                at: now(),
                channel,
                kind,
            });
        }
        result
    }

    /// [`Gateway::call`], noting in `channel` the channel of the call's last attempt.
    async fn place(
        &self,
        api: Api,
        token: Arc<Token>,
        raw: Bytes,
        request_id: &str,
        last_channel: &mut Option<ChannelId>,
    ) -> Result<ChatReply, RelayError> {
        let started = Instant::now();
        let mut backlog = self.ledger.backlog();
        if backlog.behind {
            // The settlements fall behind: the call waits (a bounded time) rather than make
            // their backlog longer; past that it goes on, and the capacity below still holds.
            self.ledger.wait_for_room(ROOM_WAIT).await;
            backlog = self.ledger.backlog();
        }
        if backlog.full {
            tracing::warn!(
                pending = backlog.pending,
                "settlement backlog full; refusing new calls until the database catches up"
            );
            return Err(RelayError::Unavailable("结算积压，请稍后重试"));
        }
        let req = parse_and_estimate(api, raw).await?;
        let prompt_estimate = req.prompt_estimate;
        let model = req.model.as_str().to_owned();
        // The request's span leaves the model to whoever parses the body.
        tracing::Span::current().record("model", model.as_str());
        // Every one of the choices may use the whole completion limit.
        let limit = req.hold_completion(self.config.default_max_tokens);
        let catalog = self.catalog();
        let order = match route(catalog.channels(), &model, api, random_below) {
            Route::UnknownModel => return Err(RelayError::ModelNotFound(model)),
            Route::NoEnabledChannel => return Err(RelayError::NoAvailableChannel(model)),
            Route::Channels(order) => order,
        };
        let price = catalog
            .price(&model)
            .ok_or_else(|| RelayError::ModelNotFound(model.clone()))?;
        // The key's limits come before the hold: a refused call costs nothing. (An unknown model
        // was refused above without counting.)
        let call = call_id(request_id);
        let hold_tokens = prompt_estimate.saturating_add(limit);
        let key_subject = (!token.limits.is_unlimited()).then_some(Subject::Key(token.id.get()));
        let mut rate = None;
        if let Some(subject) = key_subject {
            match self
                .limiter
                .admit(subject, token.limits, call, hold_tokens)
                .await
            {
                Ok(headroom) => {
                    rate = Some(RateHeaders {
                        limits: token.limits,
                        headroom,
                    });
                }
                Err(refusal) => {
                    metrics::rate_limited("key");
                    return Err(RelayError::RateLimited {
                        kind: refusal.kind,
                        retry_after_secs: refusal.retry_after_secs(),
                    });
                }
            }
        }
        let mut admission = LimitGuard(Some(LimitTicket {
            limiter: Arc::clone(&self.limiter),
            call,
            key: key_subject,
            channel: None,
            concurrency: token.limits.concurrency.is_some(),
        }));

        let at = now();
        let hold =
            Hold {
                request_id: request_id.to_owned(),
                user_id: token.user_id,
                token_id: token.id,
                amount: hold_amount(&price, prompt_estimate, limit),
                created_at: at,
                expires_at: UnixTime::from_secs(at.secs().saturating_add(
                    i64::try_from(self.config.hold_ttl.as_secs()).unwrap_or(i64::MAX),
                )),
                instance: self.instance.clone(),
                capped_key: token.quota_limit.is_some(),
            };
        let reservation = match self.ledger.reserve(&hold).await? {
            Ok(r) => r,
            Err(HoldRefusal::InsufficientUserQuota) => {
                return Err(RelayError::InsufficientQuota("用户额度不足"));
            }
            Err(HoldRefusal::InsufficientKeyQuota) => {
                return Err(RelayError::InsufficientQuota("令牌额度不足"));
            }
            Err(HoldRefusal::TokenNotFound) => {
                self.caches.keys.forget(token.id);
                return Err(RelayError::InvalidKey);
            }
            Err(HoldRefusal::TokenDisabled) => return Err(RelayError::TokenDisabled),
            Err(HoldRefusal::TokenExpired) => return Err(RelayError::TokenExpired),
        };
        // From here on, if the client goes away before the call is settled (the handler future
        // is dropped, which also cancels the upstream request), the reservation is dropped and
        // so released rather than left to expire.
        let ticket = Ticket {
            request_id: request_id.to_owned(),
            user_id: token.user_id,
            token_id: token.id,
            token_name: token.name.clone(),
            model: model.clone(),
            price,
            prompt_estimate,
            bounds: req.bounds(),
            is_stream: req.stream,
            started,
            limit: None,
            channel: None,
            span: tracing::Span::current(),
        };
        let upstream_started = Instant::now();
        let failover = Failover {
            client: &self.client,
            health: &self.health,
            limiter: &self.limiter,
            retries: self.config.retries,
            default_max_tokens: self.config.default_max_tokens,
        };
        let (channel, codec, mut reply) = failover
            .run(&req, &order, &catalog, call, hold_tokens)
            .await
            .map_err(|Unplaced { error, channel }| {
                *last_channel = channel;
                error
            })?;
        *last_channel = Some(channel.id);
        ticket.span.record("channel_id", channel.id.get());
        let mut upstream_time = upstream_started.elapsed();
        let mut ticket = ticket;
        ticket.channel = Some(channel.id);
        ticket.limit = admission.take().map(|mut t| {
            t.channel =
                (!channel.spec.limits.is_unlimited()).then_some(Subject::Channel(channel.id.get()));
            t
        });
        let adapter: &'static dyn Provider = provider::for_kind(channel.spec.kind);
        let idle = self.client.timeouts().idle;
        if req.stream {
            metrics::overhead(started.elapsed().saturating_sub(upstream_time));
            let guard = SettleGuard::new(ticket, reservation);
            return Ok(ChatReply::Stream {
                events: stream::relay(
                    reply.body,
                    idle,
                    codec::transcoder(codec, adapter, req.include_usage),
                    guard,
                    (self.failures.clone(), channel.id),
                ),
                rate,
            });
        }
        // If this fails, nothing reached the client: the call is not billed (the guard
        // releases the hold).
        let body_started = Instant::now();
        let body = read_all(&mut reply.body, idle, self.config.max_answer_bytes)
            .await
            .map_err(|e| match e {
                ChunkError::Idle => RelayError::UpstreamTimeout,
                ChunkError::Broken(m) => RelayError::Upstream(m),
            })?;
        upstream_time += body_started.elapsed();
        let answer = codec::answer(codec, adapter, body);
        let mut delivered = Delivered::default();
        delivered.push(&answer.text);
        let settled = reservation.settle(ticket.finish(answer.reported, delivered));
        // Tollgate's own time, before any wait for the database's commit.
        metrics::overhead(started.elapsed().saturating_sub(upstream_time));
        // A durable ledger writes the charge before the answer goes out.
        settled.written().await;
        Ok(ChatReply::Json {
            status: reply.status,
            body: answer.body,
            rate,
        })
    }

    /// `POST /v1/messages/count_tokens`: the prompt tokens of a Messages request, as estimated
    /// for holds. `max_tokens` may be absent here, unlike in a real call.
    pub async fn count_tokens(&self, raw: Bytes) -> Result<u64, RelayError> {
        let mut body = crate::wire::object_of(&raw).map_err(RelayError::InvalidRequest)?;
        body.entry("max_tokens").or_insert(Value::from(1));
        let raw = Bytes::from(Value::Object(body).to_string());
        Ok(parse_and_estimate(Api::Messages, raw)
            .await?
            .prompt_estimate)
    }

    /// Sends a one-token request to a channel (not billed to anyone).
    pub async fn test_channel(&self, channel: &Channel) -> ChannelTest {
        crate::health::test(&self.client, channel).await
    }

    /// Tests every automatically disabled channel and enables those that answer again.
    pub async fn probe_disabled(&self) -> Result<usize, RepoError> {
        self.health
            .probe(&self.client, self.catalog().channels())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_accepted_calls_that_then_failed_are_failures() {
        use tollgate_domain::ratelimit::LimitKind;
        let cases = [
            (RelayError::InvalidKey, None),
            (RelayError::TokenExpired, None),
            (RelayError::TokenDisabled, None),
            (RelayError::InvalidRequest("x".into()), None),
            (RelayError::ModelNotFound("m".into()), None),
            (RelayError::InsufficientQuota("q"), None),
            (
                RelayError::RateLimited {
                    kind: LimitKind::Requests,
                    retry_after_secs: 1,
                },
                None,
            ),
            (
                RelayError::NoAvailableChannel("m".into()),
                Some(CallFailure::NoChannel),
            ),
            (
                RelayError::Upstream("x".into()),
                Some(CallFailure::Upstream),
            ),
            (RelayError::UpstreamTimeout, Some(CallFailure::Timeout)),
            (
                RelayError::UpstreamRejected {
                    status: 400,
                    body: Bytes::new(),
                },
                Some(CallFailure::Refused),
            ),
            (
                RelayError::ChannelRateLimited {
                    model: "m".into(),
                    retry_after_secs: 1,
                },
                Some(CallFailure::RateLimited),
            ),
            (RelayError::Unavailable("x"), Some(CallFailure::Unavailable)),
            (
                RelayError::Repo(RepoError::Failure { detail: "x".into() }),
                Some(CallFailure::Unavailable),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(failure_of(&e), want, "{e:?}");
        }
    }

    #[test]
    fn random_stays_in_range() {
        for n in 1..50 {
            assert!(random_below(n) < n);
        }
        assert_eq!(random_below(0), 0);
    }
}
