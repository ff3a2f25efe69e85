//! The gateway: one chat-completions call from key to settlement.
//!
//! 1. The key is found in the key cache (the database only on a miss).
//! 2. The body is parsed only as far as billing and routing need.
//! 3. The catalog snapshot gives the price and the channel order (no database read).
//! 4. A hold for the estimated prompt plus the completion limit is taken by one atomic
//!    conditional statement; if it does not fit, nothing is sent upstream.
//! 5. Channels are tried in order; connection errors, timeouts, 429 and 5xx before the first
//!    byte move on (or retry the last one), 401/403 disable the channel and move on, other 4xx
//!    are the client's and are returned as they are, minus the channel key.
//! 6. The answer is relayed (streams event by event) and the call settled once, in the
//!    background; a failure before the first byte releases the hold instead.

use crate::RelayError;
use crate::anthropic;
use crate::cache::Catalog;
use crate::call::{Call, Codec};
use crate::client::{AttemptError, ChunkError, UpstreamClient, UpstreamReply, read_all};
use crate::codec;
use crate::feed::Caches;
use crate::limits::{LimitTicket, Limiter};
use crate::metrics::{self, Outcome};
use crate::provider::{self, Provider};
use crate::settle::{Delivered, Settler, Ticket, now};
use crate::stream::{self, ClientStream, SettleGuard};
use crate::tokenizer;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tollgate_domain::RepoError;
use tollgate_domain::billing::{DEFAULT_HOLD_COMPLETION_TOKENS, Hold, HoldRefusal, hold_amount};
use tollgate_domain::channel::{Api, Channel, ChannelStatus, Route, Wire, route};
use tollgate_domain::cluster::{CacheChange, ChangeFeed, InstanceId};
use tollgate_domain::ids::ChannelId;
use tollgate_domain::ratelimit::{Headroom, RateLimits, Subject};
use tollgate_domain::repository::{BillingRepository, RelayStore};
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
    /// Settlement jobs waiting (for a database that is down, say) at which new calls are
    /// refused before their hold, so the backlog's memory stays bounded.
    pub settlement_backlog: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            retries: 2,
            default_max_tokens: DEFAULT_HOLD_COMPLETION_TOKENS,
            hold_ttl: Duration::from_secs(3600),
            failure_threshold: 5,
            max_answer_bytes: 64 * 1024 * 1024,
            settlement_backlog: 100_000,
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

/// Releases a hold when dropped unless disarmed: covers every early return and a client that
/// disconnects while the upstream is still answering.
struct ReleaseOnDrop<'a> {
    request_id: Option<String>,
    settler: &'a Settler,
}

impl ReleaseOnDrop<'_> {
    fn disarm(&mut self) {
        self.request_id = None;
    }
}

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.request_id.take() {
            self.settler.release(id);
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

/// A call's id in rate-limit windows: the first 16 hex digits of its request id (random).
fn call_id(request_id: &str) -> u64 {
    request_id
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| random_below(u64::MAX))
}

/// A channel resting after an upstream 429: skipped until `until`, then one trial call before
/// full traffic (half-open).
#[derive(Debug, Clone, Copy)]
struct Rest {
    until: Instant,
    trial: bool,
}

/// How long a channel rests after a 429 without `Retry-After`.
pub const DEFAULT_REST: Duration = Duration::from_secs(5);

/// Result of `POST /channels/{id}/test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelTest {
    /// Whether the upstream answered 2xx.
    pub ok: bool,
    /// The upstream status, if it answered.
    pub status: Option<u16>,
    /// Round trip.
    pub latency_ms: u64,
    /// What happened, for the admin.
    pub message: String,
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

/// Removes the channel key from an upstream error and makes sure it is OpenAI-shaped.
fn sanitize_error(body: &[u8], key: &str, status: u16) -> Bytes {
    let text = String::from_utf8_lossy(body);
    let scrub = |s: &str| {
        if key.len() >= 4 {
            s.replace(key, "***")
        } else {
            s.to_owned()
        }
    };
    match serde_json::from_str::<Value>(&text) {
        // OpenAI's `{"error":{…}}` and Anthropic's `{"type":"error","error":{…}}` alike.
        Ok(Value::Object(o)) if o.get("error").is_some_and(Value::is_object) => {
            Bytes::from(scrub(&Value::Object(o).to_string()))
        }
        _ => {
            let message = if text.trim().is_empty() {
                format!("upstream answered {status}")
            } else {
                scrub(text.chars().take(2000).collect::<String>().as_str())
            };
            Bytes::from(
                json!({"error": {"message": message, "type": "invalid_request_error", "code": null}})
                    .to_string(),
            )
        }
    }
}

/// Bodies up to this size are parsed and counted on the async worker; larger ones on the
/// blocking pool, so a few huge prompts cannot stall every other request.
const INLINE_PARSE_BYTES: usize = 16 * 1024;

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

/// An upstream error body (already scrubbed, OpenAI- or Anthropic-shaped) in the shape of the
/// client's API: Anthropic's for `/v1/messages`, OpenAI's for the others.
fn in_client_shape(api: Api, status: u16, body: Bytes) -> Bytes {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    let anthropic_shaped = v.get("type").and_then(Value::as_str) == Some("error");
    match (api, anthropic_shaped) {
        (Api::Messages, false) => {
            Bytes::from(anthropic::openai_error_to_anthropic(status, &v).to_string())
        }
        (Api::Messages, true) => body,
        (_, true) => Bytes::from(anthropic::anthropic_error_to_openai(status, &v).to_string()),
        (_, false) => body,
    }
}

/// The relay.
pub struct Gateway {
    store: Arc<dyn RelayStore>,
    caches: Arc<Caches>,
    feed: Arc<dyn ChangeFeed>,
    instance: InstanceId,
    client: UpstreamClient,
    settler: Settler,
    config: GatewayConfig,
    failures: Mutex<HashMap<ChannelId, u32>>,
    limiter: Arc<Limiter>,
    resting: Mutex<HashMap<ChannelId, Rest>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds the gateway over the shared caches, publishing its own changes (channels it
    /// disables or revives) on `feed`, and starts the settlement worker (on the current tokio
    /// runtime). Its holds carry `instance`.
    pub fn new(
        store: Arc<dyn RelayStore>,
        caches: Arc<Caches>,
        feed: Arc<dyn ChangeFeed>,
        instance: InstanceId,
        limiter: Arc<Limiter>,
        client: UpstreamClient,
        config: GatewayConfig,
    ) -> Self {
        let billing: Arc<dyn BillingRepository> = store.clone();
        tokenizer::warm_up();
        Gateway {
            settler: Settler::start(billing, config.settlement_backlog),
            store,
            caches,
            feed,
            instance,
            client,
            config,
            failures: Mutex::new(HashMap::new()),
            limiter,
            resting: Mutex::new(HashMap::new()),
        }
    }

    /// The catalog in force.
    #[must_use]
    pub fn catalog(&self) -> Arc<Catalog> {
        self.caches.catalog.snapshot()
    }

    /// Settlement jobs not finished yet.
    #[must_use]
    pub fn pending_settlements(&self) -> usize {
        self.settler.pending()
    }

    /// Settlement jobs failing and being retried (the database is down).
    #[must_use]
    pub fn failing_settlements(&self) -> usize {
        self.settler.failing()
    }

    /// Waits for queued settlements (shutdown).
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.settler.drain(timeout).await
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
        let started = Instant::now();
        if self.settler.is_full() {
            tracing::warn!(
                pending = self.settler.pending(),
                "settlement backlog full; refusing new calls until the database catches up"
            );
            return Err(RelayError::Unavailable("结算积压，请稍后重试"));
        }
        let req = parse_and_estimate(api, raw).await?;
        let prompt_estimate = req.prompt_estimate;
        let model = req.model.as_str().to_owned();
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
            };
        match self.store.hold(&hold, at).await? {
            Ok(()) => metrics::holds(1.0),
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
        }
        // From here on, if the client goes away before the call is handed to a settlement
        // (the handler future is dropped, which also cancels the upstream request), the hold is
        // released rather than left to expire.
        let mut unsettled = ReleaseOnDrop {
            request_id: Some(request_id.to_owned()),
            settler: &self.settler,
        };
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
        };
        let upstream_started = Instant::now();
        let (channel, codec, mut reply) = self
            .attempt(&req, &order, &catalog, call, hold_tokens)
            .await?;
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
            unsettled.disarm();
            let guard = SettleGuard::new(ticket, self.settler.clone());
            return Ok(ChatReply::Stream {
                events: stream::relay(
                    reply.body,
                    idle,
                    codec::transcoder(codec, adapter, req.include_usage),
                    guard,
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
        unsettled.disarm();
        self.settler
            .settle(ticket.finish(answer.reported, delivered));
        metrics::overhead(started.elapsed().saturating_sub(upstream_time));
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

    /// Tries the channels in order until one answers 2xx; the channel, how to read its answer,
    /// and the answer.
    async fn attempt(
        &self,
        req: &Call,
        order: &[ChannelId],
        catalog: &Catalog,
        call: u64,
        tokens: u64,
    ) -> Result<(Channel, Codec, UpstreamReply), RelayError> {
        let mut candidates: Vec<&Channel> =
            order.iter().filter_map(|id| catalog.channel(*id)).collect();
        let budget = self.config.retries.saturating_add(1);
        let mut tries = 0u32;
        let mut next = 0usize;
        let mut last = RelayError::Upstream("no channel could take the call".into());
        // A channel's failure counts once per client request, however often it was retried:
        // the threshold is about failed requests, not about the retry setting.
        let mut failed: Vec<ChannelId> = Vec::new();
        // The serialized body, kept while the upstream model name and wire stay the same
        // (retries, and channels without a mapping), so a large prompt is not re-encoded per
        // attempt.
        type Encoded = (String, Wire, &'static str, Bytes, Codec);
        let mut encoded: Option<Encoded> = None;
        // Channels skipped for this call because they rest after a 429 or are at their own
        // limits: the soonest one of them takes calls again after this long.
        let mut limited: Option<Duration> = None;
        let mut other_failure = false;
        let mut admitted: Vec<ChannelId> = Vec::new();
        while tries < budget && !candidates.is_empty() {
            let channel = candidates[next.min(candidates.len() - 1)];
            if let Some(wait) = self.resting(channel.id) {
                limited = Some(limited.map_or(wait, |l| l.min(wait)));
                candidates.retain(|c| c.id != channel.id);
                continue;
            }
            if !channel.spec.limits.is_unlimited() && !admitted.contains(&channel.id) {
                let subject = Subject::Channel(channel.id.get());
                match self
                    .limiter
                    .admit(subject, channel.spec.limits, call, tokens)
                    .await
                {
                    Ok(_) => admitted.push(channel.id),
                    Err(refusal) => {
                        let wait = Duration::from_millis(
                            u64::try_from(refusal.retry_after_ms).unwrap_or(1000),
                        );
                        limited = Some(limited.map_or(wait, |l| l.min(wait)));
                        candidates.retain(|c| c.id != channel.id);
                        continue;
                    }
                }
            }
            let upstream_model = channel.upstream_model(req.model.as_str());
            let wire = channel.spec.kind.wire();
            let (path, body, codec) = match &encoded {
                Some((m, w, path, b, codec)) if m == upstream_model && *w == wire => {
                    (*path, b.clone(), *codec)
                }
                _ => {
                    let (path, b, codec) = req
                        .upstream(
                            channel.spec.kind,
                            upstream_model,
                            self.config.default_max_tokens,
                        )
                        .map_err(RelayError::InvalidRequest)?;
                    encoded = Some((upstream_model.to_owned(), wire, path, b.clone(), codec));
                    (path, b, codec)
                }
            };
            tries += 1;
            match self.client.send(channel, path, body).await {
                Err(AttemptError::Timeout) => {
                    metrics::upstream(channel.id, Outcome::Timeout);
                    // The upstream may still be generating (and billing) that answer: calling
                    // it again would pay for the same answer twice. Only other channels are
                    // tried.
                    tracing::warn!(channel = %channel.id, "upstream timed out before answering; not retried on this channel");
                    self.note_failure(channel, &mut failed).await;
                    self.trial_failed(channel.id);
                    other_failure = true;
                    last = RelayError::UpstreamTimeout;
                    candidates.retain(|c| c.id != channel.id);
                }
                Err(AttemptError::Connect(e) | AttemptError::Misconfigured(e)) => {
                    metrics::upstream(channel.id, Outcome::ConnectError);
                    tracing::warn!(channel = %channel.id, error = %e, "upstream connection failed");
                    self.note_failure(channel, &mut failed).await;
                    self.trial_failed(channel.id);
                    other_failure = true;
                    last = RelayError::Upstream("无法连接上游服务".into());
                    next += 1;
                }
                Ok(reply) if (200..300).contains(&reply.status) => {
                    metrics::upstream(channel.id, Outcome::Ok);
                    self.note_success(channel.id);
                    self.resting
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&channel.id);
                    return Ok((channel.clone(), codec, reply));
                }
                Ok(reply) if matches!(reply.status, 401 | 403) => {
                    metrics::upstream(channel.id, Outcome::KeyRejected);
                    tracing::warn!(channel = %channel.id, status = reply.status, "upstream rejected the channel key; disabling the channel");
                    self.auto_disable(
                        channel,
                        &format!("upstream answered {} (channel key rejected)", reply.status),
                    )
                    .await;
                    last = RelayError::Upstream("上游渠道密钥无效".into());
                    other_failure = true;
                    candidates.retain(|c| c.id != channel.id);
                    // Not the client's fault and not the other channels': try them.
                    tries -= 1;
                }
                Ok(reply) if reply.status == 429 => {
                    // The upstream account is at its limit: this channel rests (skipped by
                    // every call) until its Retry-After, then gets one trial call. Not a
                    // failure of the channel: it does not count towards disabling it.
                    metrics::upstream(channel.id, Outcome::RateLimited);
                    let wait = reply.retry_after.unwrap_or(DEFAULT_REST);
                    tracing::warn!(channel = %channel.id, rest_ms = wait.as_millis() as u64, "upstream answered 429; resting the channel");
                    self.resting
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(
                            channel.id,
                            Rest {
                                until: Instant::now() + wait,
                                trial: false,
                            },
                        );
                    limited = Some(limited.map_or(wait, |l| l.min(wait)));
                    candidates.retain(|c| c.id != channel.id);
                }
                Ok(reply) if reply.status >= 500 => {
                    metrics::upstream(channel.id, Outcome::ServerError);
                    tracing::warn!(channel = %channel.id, status = reply.status, "upstream failed");
                    self.note_failure(channel, &mut failed).await;
                    self.trial_failed(channel.id);
                    other_failure = true;
                    last = RelayError::Upstream(format!("上游服务返回 {}", reply.status));
                    next += 1;
                }
                Ok(mut reply) => {
                    metrics::upstream(channel.id, Outcome::ClientError);
                    // The client's request is at fault: give the upstream's answer back.
                    let idle = self.client.timeouts().idle;
                    let body = read_all(&mut reply.body, idle, 1024 * 1024)
                        .await
                        .unwrap_or_default();
                    let clean = sanitize_error(&body, channel.spec.key.expose(), reply.status);
                    return Err(RelayError::UpstreamRejected {
                        status: reply.status,
                        body: in_client_shape(req.api, reply.status, clean),
                    });
                }
            }
        }
        match limited {
            // Nothing failed: every channel was at its limit or resting.
            Some(wait) if !other_failure => {
                metrics::rate_limited("channel");
                Err(RelayError::ChannelRateLimited {
                    model: req.model.as_str().to_owned(),
                    retry_after_secs: i64::try_from(wait.as_millis().div_ceil(1000))
                        .unwrap_or(60)
                        .max(1),
                })
            }
            _ => Err(last),
        }
    }

    /// How long a channel still rests after an upstream 429, or `None` when it takes this call
    /// (not resting, or resting over and this call is its one trial).
    fn resting(&self, id: ChannelId) -> Option<Duration> {
        let mut resting = self.resting.lock().unwrap_or_else(PoisonError::into_inner);
        let rest = resting.get_mut(&id)?;
        let now = Instant::now();
        if now < rest.until {
            return Some(rest.until - now);
        }
        if rest.trial {
            // Another call is the trial: wait for its verdict.
            return Some(Duration::from_secs(1));
        }
        rest.trial = true;
        None
    }

    /// A trial call of a resting channel failed otherwise than by a 429: it rests again.
    fn trial_failed(&self, id: ChannelId) {
        if let Some(rest) = self
            .resting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&id)
        {
            *rest = Rest {
                until: Instant::now() + DEFAULT_REST,
                trial: false,
            };
        }
    }

    fn note_success(&self, id: ChannelId) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    async fn note_failure(&self, channel: &Channel, failed_in_this_request: &mut Vec<ChannelId>) {
        if failed_in_this_request.contains(&channel.id) {
            return;
        }
        failed_in_this_request.push(channel.id);
        let count = {
            let mut f = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
            let n = f.entry(channel.id).or_insert(0);
            *n += 1;
            *n
        };
        if self.config.failure_threshold > 0 && count >= self.config.failure_threshold {
            self.auto_disable(channel, &format!("{count} consecutive failed requests"))
                .await;
        }
    }

    async fn auto_disable(&self, channel: &Channel, reason: &str) {
        self.note_success(channel.id);
        let result = self
            .store
            .set_channel_status(
                channel.id,
                ChannelStatus::AutoDisabled,
                reason,
                now(),
                Some(ChannelStatus::Enabled),
            )
            .await;
        match result {
            Ok(true) => self.feed.publish(CacheChange::Channels).await,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(channel = %channel.id, error = %e, detail = e.detail(), "could not disable channel");
            }
        }
    }

    /// Sends a one-token request to a channel (not billed to anyone).
    pub async fn test_channel(&self, channel: &Channel) -> ChannelTest {
        let Some(model) = channel.spec.models.first() else {
            return ChannelTest {
                ok: false,
                status: None,
                latency_ms: 0,
                message: "channel lists no model".into(),
            };
        };
        let upstream = channel.upstream_model(model.as_str());
        // One token of chat (valid for OpenAI's and Anthropic's APIs alike), or one embedding
        // for an embedding model, which answers nothing else.
        let (api, body) = if model.as_str().contains("embedding") {
            (Api::Embeddings, json!({"model": upstream, "input": "ping"}))
        } else {
            (
                Api::Chat,
                json!({"model": upstream, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}),
            )
        };
        let path = api.path(channel.spec.kind.wire());
        let started = Instant::now();
        let result = self
            .client
            .send(channel, path, Bytes::from(body.to_string()))
            .await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match result {
            Ok(r) if (200..300).contains(&r.status) => ChannelTest {
                ok: true,
                status: Some(r.status),
                latency_ms,
                message: "ok".into(),
            },
            Ok(r) => ChannelTest {
                ok: false,
                status: Some(r.status),
                latency_ms,
                message: format!("upstream answered {}", r.status),
            },
            Err(AttemptError::Timeout) => ChannelTest {
                ok: false,
                status: None,
                latency_ms,
                message: "timed out".into(),
            },
            Err(AttemptError::Connect(e) | AttemptError::Misconfigured(e)) => ChannelTest {
                ok: false,
                status: None,
                latency_ms,
                message: e,
            },
        }
    }

    /// Tests every automatically disabled channel and enables those that answer again.
    pub async fn probe_disabled(&self) -> Result<usize, RepoError> {
        let catalog = self.catalog();
        let mut revived = 0;
        for c in catalog
            .channels()
            .iter()
            .filter(|c| c.status == ChannelStatus::AutoDisabled)
        {
            if self.test_channel(c).await.ok
                && self
                    .store
                    .set_channel_status(
                        c.id,
                        ChannelStatus::Enabled,
                        "",
                        now(),
                        Some(ChannelStatus::AutoDisabled),
                    )
                    .await?
            {
                tracing::info!(channel = %c.id, "channel answers again; enabled");
                revived += 1;
            }
        }
        if revived > 0 {
            self.feed.publish(CacheChange::Channels).await;
        }
        Ok(revived)
    }

    /// Releases holds past their expiry (left by a process that died mid-call).
    pub async fn expire_holds(&self) -> Result<u64, RepoError> {
        self.store.expire_holds(now(), 500).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_lose_the_channel_key() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-secret-123","type":"invalid_request_error"}}"#;
        let out = sanitize_error(body, "sk-secret-123", 400);
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("sk-secret-123"));
        assert!(text.contains("***"));
        let wrapped = sanitize_error(b"bad gateway html", "k", 404);
        let v: Value = serde_json::from_slice(&wrapped).expect("json");
        assert_eq!(v["error"]["message"], "bad gateway html");
    }

    #[test]
    fn random_stays_in_range() {
        for n in 1..50 {
            assert!(random_below(n) < n);
        }
        assert_eq!(random_below(0), 0);
    }
}
