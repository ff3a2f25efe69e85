//! The relay's Prometheus series (SPEC §6), recorded through the `metrics` facade: the server
//! installs the exporter; without one every call here is a no-op. Labels carry channel ids,
//! model names and outcomes — never a key, a user or a prompt.
//!
//! A series' handle is looked up in the recorder by its name and labels (label values copied
//! into a key, hashed, a shared map searched) — several times a call, about 2–3% of a call's
//! instructions (docs/benchmarks.md, tenth session). Once the server has installed its
//! recorder ([`keep_handles`]) the handles are kept instead, per thread, in [`Kept`]. Not
//! before: a handle taken without a recorder belongs to the no-op one for good.

use metrics::{Counter, Gauge, Histogram};
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Set once the process's recorder is installed; it never goes away.
static RECORDER_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Tells this module that the process's recorder is installed (the server, right after
/// installing it): handles taken from now on are kept. The recorder must not drop idle series
/// (the exporter's `idle_timeout`, which the server leaves off): a kept handle would go on
/// counting into a series no scrape shows.
pub fn keep_handles() {
    RECORDER_INSTALLED.store(true, Ordering::Release);
}

/// Series handles of one kind kept on one thread, found by name and up to two label values
/// without copying them. Bounded: past [`Kept::MOST`] series a thread looks the rest up each
/// time (label values come from configuration — channels, models, routes — but stay safe).
struct Kept<H> {
    /// By name and number label, the handles of each text label (Fx: the keys are static names
    /// and ids; SipHash of them was ~1,000 instructions a call).
    by_name: FxHashMap<(&'static str, u64), TextLabels<H>>,
    len: usize,
}

impl<H: Clone> Kept<H> {
    const MOST: usize = 4_096;

    fn new() -> Self {
        Kept {
            by_name: FxHashMap::default(),
            len: 0,
        }
    }

    /// The handle of series `name` with labels `text` and `number` (their meaning is the
    /// caller's), from `make` the first time.
    fn get(&mut self, name: &'static str, text: &str, number: u64, make: impl FnOnce() -> H) -> H {
        if !RECORDER_INSTALLED.load(Ordering::Acquire) {
            return make();
        }
        let kept = self.by_name.entry((name, number)).or_default();
        if let Some((_, h)) = kept.iter().find(|(t, _)| &**t == text) {
            return h.clone();
        }
        let h = make();
        if self.len < Self::MOST {
            kept.push((text.into(), h.clone()));
            self.len += 1;
        }
        h
    }
}

/// Handles by their text label.
type TextLabels<H> = Vec<(Box<str>, H)>;

thread_local! {
    static COUNTERS: RefCell<Kept<Counter>> = RefCell::new(Kept::new());
    static HISTOGRAMS: RefCell<Kept<Histogram>> = RefCell::new(Kept::new());
}

/// The counter `name` labelled by `text` and `number` as the caller's `make` names them.
pub fn counter(
    name: &'static str,
    text: &str,
    number: u64,
    make: impl FnOnce() -> Counter,
) -> Counter {
    COUNTERS.with_borrow_mut(|k| k.get(name, text, number, make))
}

/// [`counter`] for a histogram.
pub fn histogram(
    name: &'static str,
    text: &str,
    number: u64,
    make: impl FnOnce() -> Histogram,
) -> Histogram {
    HISTOGRAMS.with_borrow_mut(|k| k.get(name, text, number, make))
}

/// An unlabelled series' handle, kept process-wide once the recorder is installed.
fn kept<H: Clone>(cell: &OnceLock<H>, make: impl FnOnce() -> H) -> H {
    if !RECORDER_INSTALLED.load(Ordering::Acquire) {
        return make();
    }
    cell.get_or_init(make).clone()
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
    // The id's bits as the number label: one handle per channel, whatever its id.
    let id = u64::from_ne_bytes(channel.get().to_ne_bytes());
    counter(UPSTREAM_REQUESTS, outcome.as_str(), id, || {
        metrics::counter!(UPSTREAM_REQUESTS, "channel" => channel.get().to_string(), "outcome" => outcome.as_str())
    })
    .increment(1);
}

/// A settlement written.
pub(crate) fn charged(model: &str, quota: i64) {
    counter(
        QUOTA_CHARGED,
        model,
        0,
        || metrics::counter!(QUOTA_CHARGED, "model" => model.to_owned()),
    )
    .increment(u64::try_from(quota).unwrap_or(0));
}

/// A hold taken (+1) or finished (−1).
pub(crate) fn holds(delta: f64) {
    static KEPT: OnceLock<Gauge> = OnceLock::new();
    kept(&KEPT, || metrics::gauge!(HOLDS_IN_FLIGHT)).increment(delta);
}

/// The settlement backlog.
pub(crate) fn settlements(pending: usize, failing: usize) {
    static PENDING: OnceLock<Gauge> = OnceLock::new();
    static FAILING: OnceLock<Gauge> = OnceLock::new();
    kept(&PENDING, || metrics::gauge!(SETTLEMENTS_PENDING)).set(pending as f64);
    kept(&FAILING, || metrics::gauge!(SETTLEMENTS_FAILING)).set(failing as f64);
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
    static KEPT: OnceLock<Histogram> = OnceLock::new();
    kept(&KEPT, || metrics::histogram!(GATEWAY_OVERHEAD)).record(d.as_secs_f64());
}

/// A failed call reported.
pub(crate) fn failed_call(kind: CallFailure) {
    metrics::counter!(FAILED_CALLS, "kind" => kind.name()).increment(1);
}

/// A failed call left out of the usage report.
pub(crate) fn failed_call_dropped() {
    metrics::counter!(FAILED_CALLS_DROPPED).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn handles_are_kept_by_name_and_labels_once_the_recorder_is_installed() {
        let made = Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            Counter::noop()
        };
        let mut kept = Kept::new();
        // This test's thread only: other tests may set the flag, never clear it.
        if !RECORDER_INSTALLED.load(Ordering::Acquire) {
            let _ = kept.get("a", "x", 1, make);
            let _ = kept.get("a", "x", 1, make);
            assert_eq!(made.get(), 2, "no recorder yet: looked up every time");
            made.set(0);
        }
        keep_handles();
        for _ in 0..3 {
            let _ = kept.get("a", "x", 1, make);
        }
        assert_eq!(made.get(), 1, "then kept");
        let _ = kept.get("a", "y", 1, make);
        let _ = kept.get("a", "x", 2, make);
        let _ = kept.get("b", "x", 1, make);
        assert_eq!(made.get(), 4, "each name and label values its own handle");
        for i in 0..Kept::<Counter>::MOST as u64 {
            let _ = kept.get("c", "", i, make);
        }
        assert_eq!(kept.len, Kept::<Counter>::MOST, "bounded");
        let before = made.get();
        let _ = kept.get("d", "", 0, make);
        let _ = kept.get("d", "", 0, make);
        assert_eq!(
            made.get(),
            before + 2,
            "past the bound: looked up every time"
        );
    }
}
