//! The relay's Prometheus series (SPEC §6), recorded through the `metrics` facade: the server
//! installs the exporter; without one every call here is a no-op. Labels carry channel ids,
//! model names and outcomes — never a key, a user or a prompt.

use std::time::Duration;
use tollgate_domain::call_errors::CallFailure;
use tollgate_domain::ids::ChannelId;

/// Upstream attempts, by channel and outcome.
pub const UPSTREAM_REQUESTS: &str = "tollgate_upstream_requests_total";
/// Quota charged by settlements written, by model.
pub const QUOTA_CHARGED: &str = "tollgate_quota_charged_total";
/// Holds taken by this instance and not yet settled or released.
pub const HOLDS_IN_FLIGHT: &str = "tollgate_holds_in_flight";
/// Time a call spends in Tollgate itself (upstream time excluded).
pub const GATEWAY_OVERHEAD: &str = "tollgate_gateway_overhead_seconds";
/// Calls refused by a rate limit.
pub const RATE_LIMITED: &str = "tollgate_rate_limited_total";
/// Rate-limit checks answered per instance because Redis could not be reached.
pub const RATE_LIMIT_FALLBACK: &str = "tollgate_rate_limit_fallback_total";
/// Settlement jobs waiting to be written.
pub const SETTLEMENTS_PENDING: &str = "tollgate_settlements_pending";
/// Settlement jobs failing and being retried (the database is down).
pub const SETTLEMENTS_FAILING: &str = "tollgate_settlements_failing";
/// Accepted calls that failed, by kind (each call once, however many attempts it made).
pub const FAILED_CALLS: &str = "tollgate_failed_calls_total";
/// Failed calls that could not be counted in the usage report (queue full, database down).
pub const FAILED_CALLS_DROPPED: &str = "tollgate_failed_calls_dropped_total";

/// How one upstream attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Ok,
    /// No answer head within the first-byte timeout.
    Timeout,
    /// Could not connect, or the connection broke.
    ConnectError,
    /// 401/403: the channel's key was refused.
    KeyRejected,
    /// 429.
    RateLimited,
    /// 5xx.
    ServerError,
    /// Another 4xx: the client's request was at fault.
    ClientError,
}

impl Outcome {
    /// The label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::ConnectError => "connect_error",
            Outcome::KeyRejected => "key_rejected",
            Outcome::RateLimited => "rate_limited",
            Outcome::ServerError => "server_error",
            Outcome::ClientError => "client_error",
        }
    }
}

/// Describes every series, so a scrape shows them (with their help text) before any traffic.
pub fn describe() {
    metrics::describe_counter!(
        UPSTREAM_REQUESTS,
        "Upstream attempts by channel and outcome."
    );
    metrics::describe_counter!(
        QUOTA_CHARGED,
        "Quota charged by written settlements, by model."
    );
    metrics::describe_gauge!(
        HOLDS_IN_FLIGHT,
        "Holds taken by this instance and not yet settled or released."
    );
    metrics::describe_histogram!(
        GATEWAY_OVERHEAD,
        metrics::Unit::Seconds,
        "Time a relayed call spends in Tollgate itself, upstream time excluded."
    );
    metrics::describe_counter!(
        RATE_LIMITED,
        "Calls refused by a rate limit, by scope (key or channel)."
    );
    metrics::describe_counter!(
        RATE_LIMIT_FALLBACK,
        "Rate-limit operations answered per instance because Redis was unreachable."
    );
    metrics::describe_gauge!(SETTLEMENTS_PENDING, "Settlement jobs not yet written.");
    metrics::describe_gauge!(
        SETTLEMENTS_FAILING,
        "Settlement jobs failing and being retried."
    );
    metrics::describe_counter!(
        FAILED_CALLS,
        "Accepted calls that failed, by kind, each once however many attempts it made."
    );
    metrics::describe_counter!(
        FAILED_CALLS_DROPPED,
        "Failed calls left out of the usage report (queue full or database down)."
    );
    metrics::counter!(RATE_LIMITED, "scope" => "key").increment(0);
    metrics::counter!(FAILED_CALLS_DROPPED).increment(0);
    metrics::counter!(RATE_LIMIT_FALLBACK).increment(0);
    metrics::gauge!(HOLDS_IN_FLIGHT).set(0.0);
    metrics::gauge!(SETTLEMENTS_PENDING).set(0.0);
    metrics::gauge!(SETTLEMENTS_FAILING).set(0.0);
}

/// One upstream attempt.
pub(crate) fn upstream(channel: ChannelId, outcome: Outcome) {
    metrics::counter!(UPSTREAM_REQUESTS, "channel" => channel.get().to_string(), "outcome" => outcome.as_str())
        .increment(1);
}

/// A settlement written.
pub(crate) fn charged(model: &str, quota: i64) {
    metrics::counter!(QUOTA_CHARGED, "model" => model.to_owned())
        .increment(u64::try_from(quota).unwrap_or(0));
}

/// A hold taken (+1) or finished (−1).
pub(crate) fn holds(delta: f64) {
    metrics::gauge!(HOLDS_IN_FLIGHT).increment(delta);
}

/// The settlement backlog.
pub(crate) fn settlements(pending: usize, failing: usize) {
    metrics::gauge!(SETTLEMENTS_PENDING).set(pending as f64);
    metrics::gauge!(SETTLEMENTS_FAILING).set(failing as f64);
}

/// A call refused by a key's limits (`scope` `key`) or because every channel was at its own
/// (`scope` `channel`).
pub(crate) fn rate_limited(scope: &'static str) {
    metrics::counter!(RATE_LIMITED, "scope" => scope).increment(1);
}

/// A rate-limit operation answered per instance (Redis unreachable).
pub(crate) fn rate_limit_fallback() {
    metrics::counter!(RATE_LIMIT_FALLBACK).increment(1);
}

/// Tollgate's own time in one call.
pub(crate) fn overhead(d: Duration) {
    metrics::histogram!(GATEWAY_OVERHEAD).record(d.as_secs_f64());
}

/// A failed call reported.
pub(crate) fn failed_call(kind: CallFailure) {
    metrics::counter!(FAILED_CALLS, "kind" => kind.name()).increment(1);
}

/// A failed call left out of the usage report.
pub(crate) fn failed_call_dropped() {
    metrics::counter!(FAILED_CALLS_DROPPED).increment(1);
}
