//! `GET /metrics` in Prometheus text format (SPEC §6): one process-wide recorder
//! (`metrics-exporter-prometheus`, without its own listener) that the relay and the HTTP
//! middleware record into, rendered on each scrape. Histograms have explicit buckets so
//! Prometheus can aggregate them across instances.

use actix_web::HttpResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;
use tollgate_relay::metrics::GATEWAY_OVERHEAD;

/// Requests answered, by route pattern and status.
pub const HTTP_REQUESTS: &str = "tollgate_http_requests_total";
/// Time to the response head, by route pattern.
pub const HTTP_DURATION: &str = "tollgate_http_request_duration_seconds";

/// Buckets of request durations, seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets of Tollgate's own time in a call, seconds: it should be well under a millisecond.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use (every `Application` of a process shares it).
pub fn recorder() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets(DURATION_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(GATEWAY_OVERHEAD.to_owned()),
                        OVERHEAD_BUCKETS,
                    )
                })
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    describe();
                    tollgate_relay::metrics::keep_handles();
                    // Histograms buffer samples until upkeep; keep that bounded between scrapes.
                    let upkeep = handle.clone();
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            upkeep.run_upkeep();
                        }
                    });
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route and status."
    );
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "Time to the response head, by route."
    );
    tollgate_relay::metrics::describe();
}

/// One answered request.
pub fn http(route: &str, status: u16, elapsed: Duration) {
    use tollgate_relay::metrics::{counter, histogram};
    counter(HTTP_REQUESTS, route, u64::from(status), || {
        metrics::counter!(HTTP_REQUESTS, "route" => route.to_owned(), "status" => status.to_string())
    })
    .increment(1);
    histogram(
        HTTP_DURATION,
        route,
        0,
        || metrics::histogram!(HTTP_DURATION, "route" => route.to_owned()),
    )
    .record(elapsed.as_secs_f64());
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    responses((
        status = 200,
        description = "Prometheus text format: `tollgate_http_requests_total{route,status}`, \
            `tollgate_http_request_duration_seconds`, `tollgate_gateway_overhead_seconds`, \
            `tollgate_upstream_requests_total{channel,outcome}`, `tollgate_quota_charged_total{model}`, \
            `tollgate_holds_in_flight`, `tollgate_rate_limited_total`, …",
        content_type = "text/plain; version=0.0.4",
        body = String,
    )),
)]
pub async fn scrape() -> HttpResponse {
    let body = recorder().map_or_else(String::new, |h| {
        h.run_upkeep();
        h.render()
    });
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}
