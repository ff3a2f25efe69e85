//! Failover: trying a call's channels in order until one answers.
//!
//! Connection errors and 5xx before the first byte move on to the next channel (or retry the
//! last one), within the retry budget; a timeout is never retried on the same channel (the
//! upstream may still be generating, and billing, that answer); 401/403 disable the channel and
//! move on without using the budget; a 429 rests the channel; other 4xx are the client's and
//! are returned as they are, minus the channel key and in the client's API's shape. Channels at
//! their own rate limits or resting are skipped; when nothing else failed, the call is refused
//! as rate limited with the soonest time a channel takes calls again.

use crate::RelayError;
use crate::cache::Catalog;
use crate::call::{Call, Codec};
use crate::client::{AttemptError, UpstreamClient, UpstreamReply, read_all};
use crate::health::{ChannelHealth, DEFAULT_REST};
use crate::limits::Limiter;
use crate::metrics::{self, Outcome};
use crate::scrub::{in_client_shape, sanitize_error};
use bytes::Bytes;
use std::time::Duration;
use tollgate_domain::channel::{Channel, Wire};
use tollgate_domain::ids::ChannelId;
use tollgate_domain::ratelimit::Subject;

/// A call no channel answered: why, and the channel of its last attempt (`None`: no channel
/// was sent the call).
#[derive(Debug)]
pub(crate) struct Unplaced {
    pub(crate) error: RelayError,
    pub(crate) channel: Option<ChannelId>,
}

/// What failover needs from the gateway, for one call.
pub(crate) struct Failover<'a> {
    pub(crate) client: &'a UpstreamClient,
    pub(crate) health: &'a ChannelHealth,
    pub(crate) limiter: &'a Limiter,
    /// Extra attempts after the first.
    pub(crate) retries: u32,
    /// Completion tokens written when a request sets no limit and the upstream needs one.
    pub(crate) default_max_tokens: u64,
}

impl Failover<'_> {
    /// Tries the channels of `order` until one answers 2xx; the channel, how to read its
    /// answer, and the answer. `call` and `tokens` are the call's place in channel rate limits.
    pub(crate) async fn run(
        &self,
        req: &Call,
        order: &[ChannelId],
        catalog: &Catalog,
        call: u64,
        tokens: u64,
    ) -> Result<(Channel, Codec, UpstreamReply), Unplaced> {
        let mut tried = None;
        self.attempts(req, order, catalog, call, tokens, &mut tried)
            .await
            .map_err(|error| Unplaced {
                error,
                channel: tried,
            })
    }

    /// [`Failover::run`], noting in `tried` each channel as it is sent the call.
    async fn attempts(
        &self,
        req: &Call,
        order: &[ChannelId],
        catalog: &Catalog,
        call: u64,
        tokens: u64,
        tried: &mut Option<ChannelId>,
    ) -> Result<(Channel, Codec, UpstreamReply), RelayError> {
        let mut candidates: Vec<&Channel> =
            order.iter().filter_map(|id| catalog.channel(*id)).collect();
        let budget = self.retries.saturating_add(1);
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
            if let Some(wait) = self.health.resting(channel.id) {
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
                _ => match req.upstream(channel.spec.kind, upstream_model, self.default_max_tokens)
                {
                    Ok((path, b, codec)) => {
                        encoded = Some((upstream_model.to_owned(), wire, path, b.clone(), codec));
                        (path, b, codec)
                    }
                    // The first channel's refusal is the client's answer; after an attempt the
                    // call failed upstream, and a channel that cannot take it is skipped.
                    Err(e) if tried.is_none() => return Err(RelayError::InvalidRequest(e)),
                    Err(e) => {
                        tracing::warn!(channel = %channel.id, error = %e, "request cannot be sent to this channel; skipped");
                        candidates.retain(|c| c.id != channel.id);
                        continue;
                    }
                },
            };
            tries += 1;
            *tried = Some(channel.id);
            match self.client.send(channel, path, body).await {
                Err(AttemptError::Timeout) => {
                    metrics::upstream(channel.id, Outcome::Timeout);
                    // The upstream may still be generating (and billing) that answer: calling
                    // it again would pay for the same answer twice. Only other channels are
                    // tried.
                    tracing::warn!(channel = %channel.id, "upstream timed out before answering; not retried on this channel");
                    self.health.failed(channel, &mut failed).await;
                    self.health.trial_failed(channel.id);
                    other_failure = true;
                    last = RelayError::UpstreamTimeout;
                    candidates.retain(|c| c.id != channel.id);
                }
                Err(AttemptError::Connect(e) | AttemptError::Misconfigured(e)) => {
                    metrics::upstream(channel.id, Outcome::ConnectError);
                    tracing::warn!(channel = %channel.id, error = %e, "upstream connection failed");
                    self.health.failed(channel, &mut failed).await;
                    self.health.trial_failed(channel.id);
                    other_failure = true;
                    last = RelayError::Upstream("无法连接上游服务".into());
                    next += 1;
                }
                Ok(reply) if (200..300).contains(&reply.status) => {
                    metrics::upstream(channel.id, Outcome::Ok);
                    self.health.succeeded(channel.id);
                    return Ok((channel.clone(), codec, reply));
                }
                Ok(reply) if matches!(reply.status, 401 | 403) => {
                    metrics::upstream(channel.id, Outcome::KeyRejected);
                    tracing::warn!(channel = %channel.id, status = reply.status, "upstream rejected the channel key; disabling the channel");
                    self.health
                        .disable(
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
                    self.health.rest(channel.id, wait);
                    limited = Some(limited.map_or(wait, |l| l.min(wait)));
                    candidates.retain(|c| c.id != channel.id);
                }
                Ok(reply) if reply.status >= 500 => {
                    metrics::upstream(channel.id, Outcome::ServerError);
                    tracing::warn!(channel = %channel.id, status = reply.status, "upstream failed");
                    self.health.failed(channel, &mut failed).await;
                    self.health.trial_failed(channel.id);
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
}
