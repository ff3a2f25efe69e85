//! How fast a change made through one instance reaches another: two servers on one database,
//! `N` price changes through A (default 200), each timed from A's answer until B's
//! `GET /models` shows the new price (B is polled every 0.5 ms). Prints p50, p99 and max, with
//! Redis (`BENCH_REDIS_URL`, default redis://127.0.0.1:6379) and without it. On MariaDB when
//! `TOLLGATE_TEST_MYSQL_URL` is set, else SQLite. A benchmark, not a test:
//!
//! ```sh
//! cargo run --release -p tollgate-tests --bin propagation -- 200
//! ```
#![expect(clippy::expect_used, reason = "a benchmark stops at the first failure")]

use reqwest::Method;
use std::time::{Duration, Instant};
use tollgate_storage::testing;
use tollgate_tests::TestApp;

async fn measure(redis: Option<&str>, n: usize) -> Vec<Duration> {
    let (url, backend) = match testing::mysql_url().await.expect("MySQL") {
        Some(u) => (u, "mysql"),
        None => (testing::sqlite_url(), "sqlite"),
    };
    let settings: Vec<(&str, &str)> = redis
        .map(|r| ("TOLLGATE_REDIS_URL", r))
        .into_iter()
        .collect();
    let a = TestApp::start_with(url.clone(), backend, &settings).await;
    let b = TestApp::start_with(url, backend, &settings).await;
    a.echo_model("m").await;
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let price = format!("{}.5", i + 1);
        a.price("m", &price, "1").await;
        let started = Instant::now();
        loop {
            let models = b.ext(Method::GET, "/models", None).await;
            let seen = models.data().as_array().is_some_and(|l| {
                l.iter()
                    .any(|m| m["model"] == "m" && same_number(&m["input"], &price))
            });
            if seen {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "change {i} not seen"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        took.push(started.elapsed());
    }
    a.stop().await;
    b.stop().await;
    took.sort();
    took
}

/// Whether a JSON number reads as `text` (prices are exact decimals: compared as text).
fn same_number(v: &serde_json::Value, text: &str) -> bool {
    v.as_number().is_some_and(|n| n.as_str() == text)
}

fn report(label: &str, took: &[Duration]) {
    let at = |q: f64| took[((took.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{label}: {} changes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        took.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let backend = if std::env::var(testing::MYSQL_ENV).is_ok() {
        "mariadb"
    } else {
        "sqlite"
    };
    let redis =
        std::env::var("BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    report(
        &format!("{backend}, with Redis"),
        &measure(Some(&redis), n).await,
    );
    report(
        &format!("{backend}, without Redis (database polling)"),
        &measure(None, n).await,
    );
}
