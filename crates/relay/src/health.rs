//! Channel health, as this instance sees it: consecutive failures that disable a channel
//! automatically (a change published on the feed, so every instance stops using it), channels
//! resting after an upstream 429 (skipped until their `Retry-After`, then one trial call:
//! half-open), the one-token channel test, and the probe that brings automatically disabled
//! channels back when they answer again.

use crate::client::{AttemptError, UpstreamClient};
use crate::settle::now;
use bytes::Bytes;
use rustc_hash::FxHashMap;
use serde_json::json;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tollgate_domain::RepoError;
use tollgate_domain::channel::{Api, Channel, ChannelStatus};
use tollgate_domain::cluster::{CacheChange, ChangeFeed};
use tollgate_domain::ids::ChannelId;
use tollgate_domain::repository::RelayStore;

/// How long a channel rests after a 429 without `Retry-After`.
pub const DEFAULT_REST: Duration = Duration::from_secs(5);

/// A channel resting after an upstream 429: skipped until `until`, then one trial call before
/// full traffic (half-open).
#[derive(Debug, Clone, Copy)]
struct Rest {
    until: Instant,
    trial: bool,
}

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

/// What this instance knows about its channels' health.
pub(crate) struct ChannelHealth {
    store: Arc<dyn RelayStore>,
    feed: Arc<dyn ChangeFeed>,
    /// Consecutive failed client requests after which a channel is disabled (0: never).
    failure_threshold: u32,
    failures: Mutex<FxHashMap<ChannelId, u32>>,
    resting: Mutex<FxHashMap<ChannelId, Rest>>,
}

impl ChannelHealth {
    pub(crate) fn new(
        store: Arc<dyn RelayStore>,
        feed: Arc<dyn ChangeFeed>,
        failure_threshold: u32,
    ) -> Self {
        ChannelHealth {
            store,
            feed,
            failure_threshold,
            failures: Mutex::new(FxHashMap::default()),
            resting: Mutex::new(FxHashMap::default()),
        }
    }

    /// How long a channel still rests after an upstream 429, or `None` when it takes this call
    /// (not resting, or resting over and this call is its one trial).
    pub(crate) fn resting(&self, id: ChannelId) -> Option<Duration> {
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

    /// The upstream answered 429: the channel rests for `wait` (skipped by every call), then
    /// gets one trial call. Not a failure: it does not count towards disabling the channel.
    pub(crate) fn rest(&self, id: ChannelId, wait: Duration) {
        self.resting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id,
                Rest {
                    until: Instant::now() + wait,
                    trial: false,
                },
            );
    }

    /// A trial call of a resting channel failed otherwise than by a 429: it rests again.
    pub(crate) fn trial_failed(&self, id: ChannelId) {
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

    /// The channel answered 2xx: its failure count starts over and it rests no more.
    pub(crate) fn succeeded(&self, id: ChannelId) {
        self.forget_failures(id);
        self.resting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    fn forget_failures(&self, id: ChannelId) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// The channel failed a client request (counted once per request, however often it was
    /// retried: the threshold is about failed requests, not about the retry setting).
    pub(crate) async fn failed(
        &self,
        channel: &Channel,
        failed_in_this_request: &mut Vec<ChannelId>,
    ) {
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
        if self.failure_threshold > 0 && count >= self.failure_threshold {
            self.disable(channel, &format!("{count} consecutive failed requests"))
                .await;
        }
    }

    /// Disables an enabled channel automatically, with the reason, for every instance.
    pub(crate) async fn disable(&self, channel: &Channel, reason: &str) {
        self.forget_failures(channel.id);
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

    /// Tests every automatically disabled channel among `channels` and enables those that
    /// answer again; how many.
    pub(crate) async fn probe(
        &self,
        client: &UpstreamClient,
        channels: &[Channel],
    ) -> Result<usize, RepoError> {
        let mut revived = 0;
        for c in channels
            .iter()
            .filter(|c| c.status == ChannelStatus::AutoDisabled)
        {
            if test(client, c).await.ok
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
}

/// Sends a one-token request to a channel (not billed to anyone).
pub(crate) async fn test(client: &UpstreamClient, channel: &Channel) -> ChannelTest {
    let Some(model) = channel.spec.models.first() else {
        return ChannelTest {
            ok: false,
            status: None,
            latency_ms: 0,
            message: "channel lists no model".into(),
        };
    };
    let upstream = channel.upstream_model(model.as_str());
    // One token of chat (valid for OpenAI's and Anthropic's APIs alike), or one embedding for
    // an embedding model, which answers nothing else.
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
    let result = client
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
